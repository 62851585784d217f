// strategies/migu: the quantile mask on hand-computed cases, masked rows and untouched ones,
// magnitudes over micro-batches, evaluation, the first task, composition and resume.
#include <catch2/catch.hpp>

#include <spdlog/spdlog.h>

#include "clrun/core/interrupt.hpp"
#include "clrun/eval/evaluator.hpp"
#include "clrun/train/experiment.hpp"
#include "clrun/train/trainer.hpp"
#include "support.hpp"

using namespace clrun;

namespace {
std::vector<bool> mask_of(std::vector<float> a, double t) {
  torch::Tensor m = migu_row_mask(torch::tensor(a), t);
  std::vector<bool> out;
  for (int64_t i = 0; i < m.size(0); ++i) out.push_back(m[i].item<bool>());
  return out;
}
}  // namespace

TEST_CASE("MIGU's row mask: quantile with linear interpolation, ties kept, edge cases", "[strategies][migu]") {
  // d = 5, T = 0.7: position 2.8 between sorted[2] = 3 and sorted[3] = 4 -> threshold 3.8
  CHECK(mask_of({5, 1, 4, 3, 2}, 0.7) == std::vector<bool>{true, false, true, false, false});
  // T = 0.5, position 2 exactly: threshold = 3, ties at 3 are kept (more than 1 - T kept)
  CHECK(mask_of({3, 1, 3, 3, 0}, 0.5) == std::vector<bool>{true, false, true, true, false});
  CHECK(mask_of({1, 2, 3}, 0.0) == std::vector<bool>{true, true, true});   // T = 0 keeps all
  CHECK(mask_of({1, 3, 2}, 1.0) == std::vector<bool>{false, true, false}); // T = 1 keeps the max
  CHECK(mask_of({0, 0, 0}, 0.7) == std::vector<bool>{true, true, true});   // all zero keeps all
  CHECK(mask_of({7}, 0.7) == std::vector<bool>{true});                     // d_out = 1
  // without ties kept = d - ceil(T (d - 1)): d = 11, T = 0.7 -> 11 - 7 = 4
  CHECK(migu_row_mask(torch::arange(11, torch::kFloat32), 0.7).sum().item<int64_t>() == 4);
  // half-precision magnitudes are upcast: no NaN, same mask
  CHECK(migu_row_mask(torch::tensor({5.f, 1.f, 4.f, 3.f, 2.f}).to(torch::kBFloat16).to(torch::kFloat32), 0.7)
            .equal(migu_row_mask(torch::tensor({5.f, 1.f, 4.f, 3.f, 2.f}), 0.7)));
}

namespace {
struct MiguRig {
  test::TempDir dir{"migu"};
  ExperimentSpec spec;
  std::shared_ptr<Stream> stream;
  explicit MiguRig(const std::vector<Override>& extra = {}) {
    test::write_tiny_mnist(dir.path());
    spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", extra);
    stream = spec.stream.build(spec.dataset.build(), spec.seed);
  }
  std::shared_ptr<Classifier> model() {
    torch::manual_seed(8);
    return std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  }
};

}  // namespace

TEST_CASE("MIGU masks whole weight rows after the first task, leaves biases and other rows exact", "[strategies][migu]") {
  for (bool first : {true, false}) {
    MiguRig rig({parse_override("train.iterations=1"), parse_override("train.optimizer={name: sgd, lr: 0.1}"),
                 parse_override("strategy={name: migu, threshold: 0.5}")});
    // Two identical models; one trained by finetune, one by MIGU, same single step.
    auto a = rig.model(), b = rig.model();
    Strategy plain;
    auto migu = rig.spec.strategy.build(rig.spec.seed);
    Trainer ta(rig.spec, *rig.stream, a, plain, test::model_factory(rig.spec, *rig.stream));
    Trainer tb(rig.spec, *rig.stream, b, *migu, test::model_factory(rig.spec, *rig.stream));
    const int task = first ? 0 : 1;
    ta.train_task(task);
    tb.train_task(task);
    auto pa = a->named_parameters(), pb = b->named_parameters();
    for (const auto& item : pa) {
      INFO(item.key());
      const bool weight = item.key().find("weight") != std::string::npos;
      if (first || !weight) {
        CHECK(item.value().equal(pb[item.key()]));  // first task unmasked; biases untouched
        continue;
      }
      // each row either moved exactly like finetune's, or not at all
      torch::Tensor init = rig.model()->named_parameters()[item.key()];
      torch::Tensor same = (pb[item.key()] == item.value()).all(1), still = (pb[item.key()] == init).all(1);
      CHECK(same.logical_or(still).all().item<bool>());
      // masked rows: finetune moved them, MIGU did not; T = 0.5 masks at most ceil(0.5 (d - 1))
      const int64_t rows = item.value().size(0), masked = still.logical_and(same.logical_not()).sum().item<int64_t>();
      CHECK(masked > 0);
      CHECK(masked <= (rows + 0) / 2);
    }
  }
}

TEST_CASE("MIGU magnitudes: two micro-batches give the mask of one batch of both, eval adds nothing", "[strategies][migu]") {
  // accumulate_steps 2 with batch 8 vs one batch of 16: same rows, same gradient, same mask
  MiguRig one({parse_override("train.iterations=1"), parse_override("train.batch_size=16"),
               parse_override("strategy={name: migu, threshold: 0.7}")});
  MiguRig two({parse_override("train.iterations=1"), parse_override("train.batch_size=8"), parse_override("train.accumulate_steps=2"),
               parse_override("strategy={name: migu, threshold: 0.7}")});
  auto ma = one.model(), mb = two.model();
  auto sa = one.spec.strategy.build(0), sb = two.spec.strategy.build(0);
  Trainer ta(one.spec, *one.stream, ma, *sa, test::model_factory(one.spec, *one.stream));
  Trainer tb(two.spec, *two.stream, mb, *sb, test::model_factory(two.spec, *two.stream));
  ta.train_task(1);
  tb.train_task(1);
  auto pa = ma->named_parameters(), pb = mb->named_parameters();
  for (const auto& item : pa) {
    INFO(item.key());
    // moved rows agree to float tolerance, and the same rows stayed put
    CHECK(item.value().allclose(pb[item.key()], 1e-5, 1e-6));
  }
  // evaluation forwards under no-grad: the diagnostics after a task see only training steps
  Evaluator(*one.stream, *sa, 64, true).evaluate(*ma, 1);
  CHECK(sa->describe().at("per_task")[0].at("steps") == 1);
}

TEST_CASE("MIGU composes with a base strategy and resumes identically", "[strategies][migu][resume]") {
  spdlog::set_level(spdlog::level::err);
  test::TempDir dir("migu_resume");
  test::write_tiny_mnist(dir.path());
  int k = 0;
  for (const std::string yaml : {"{name: migu, base: {name: replay, memory_size: 30}}", "{name: migu, base: {name: ewc, lambda: 10}}",
                                 "{name: migu, threshold: 0.5, mask_updates: true, layers: ['*fc0']}"}) {
    INFO(yaml);
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", {parse_override("strategy=" + yaml)});
    auto [expected, resumed] = test::run_interrupted_and_resumed(spec, dir / std::to_string(k++), 2, 2);
    CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
    CHECK(resumed["strategy_state"] == expected["strategy_state"]);
    CHECK(resumed["strategy_hooks"]["calls"] == expected["strategy_hooks"]["calls"]);
    // the base really ran: its hooks were called and its state is reported
    CHECK(expected["strategy_state"]["base_hook_calls"]["after_step"].get<int64_t>() > 0);
    const auto& last = expected["strategy_state"]["per_task"][2]["layers"];
    CHECK(last.size() >= 1);
    CHECK(last.begin()->at("updated_fraction").get<double>() < 1.0);
    CHECK(last.begin()->contains("jaccard_with_previous_task"));
  }
  // the resolved config names the base in full
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", {parse_override("strategy={name: migu, base: replay}")});
  CHECK(spec.resolved()["strategy"]["base"]["memory_size"] == 500);
  CHECK_THROWS_WITH(parse_spec(test::tiny_config(dir.path()), "tiny.yaml", {parse_override("strategy={name: migu, base: {name: replya}}")}),
                    Catch::Contains("strategy.base.name") && Catch::Contains("did you mean 'replay'"));
}

TEST_CASE("MIGU's conv extension masks whole output channels, off by default", "[strategies][migu][conv]") {
  for (bool conv : {false, true}) {
    INFO(conv);
    MiguRig rig({parse_override("backbone={name: cnn, channels: [6], hidden: 8}"), parse_override("train.iterations=1"),
                 parse_override("train.optimizer={name: sgd, lr: 0.1}"),
                 parse_override(std::string("strategy={name: migu, threshold: 0.5, conv: ") + (conv ? "true" : "false") + "}")});
    auto a = rig.model(), b = rig.model();
    auto init = rig.model()->named_parameters()["backbone.conv0.weight"];
    Strategy plain;
    auto migu = rig.spec.strategy.build(0);
    Trainer(rig.spec, *rig.stream, a, plain, test::model_factory(rig.spec, *rig.stream)).train_task(1);
    Trainer(rig.spec, *rig.stream, b, *migu, test::model_factory(rig.spec, *rig.stream)).train_task(1);
    torch::Tensor fine = a->named_parameters()["backbone.conv0.weight"].flatten(1);
    torch::Tensor got = b->named_parameters()["backbone.conv0.weight"].flatten(1);
    if (!conv) {
      CHECK(got.equal(fine));
      continue;
    }
    torch::Tensor same = (got == fine).all(1), still = (got == init.flatten(1)).all(1);
    CHECK(same.logical_or(still).all().item<bool>());
    const int64_t masked = still.logical_and(same.logical_not()).sum().item<int64_t>();
    CHECK(masked > 0);
    CHECK(masked <= 3);  // T = 0.5 of 6 channels: at most ceil(2.5)
  }
}

TEST_CASE("a wrapper runs the base's hooks first, except after_step", "[strategies][migu][composition]") {
  MiguRig rig({parse_override("train.iterations=2")});
  auto log = std::make_shared<std::vector<std::string>>();
  struct Base : Strategy {
    std::shared_ptr<std::vector<std::string>> log;
    void on_before_forward(StepContext&) override { log->push_back("base.before_forward"); }
    void on_after_backward(StepContext&) override { log->push_back("base.after_backward"); }
    void on_after_step(StepContext&) override { log->push_back("base.after_step"); }
  };
  struct Outer : WrapperStrategy {
    std::shared_ptr<std::vector<std::string>> log;
    using WrapperStrategy::WrapperStrategy;
    void on_before_forward(StepContext& ctx) override {
      WrapperStrategy::on_before_forward(ctx);
      log->push_back("outer.before_forward");
    }
    void on_after_backward(StepContext& ctx) override {
      WrapperStrategy::on_after_backward(ctx);
      log->push_back("outer.after_backward");
    }
    void on_after_step(StepContext& ctx) override {
      log->push_back("outer.after_step");
      WrapperStrategy::on_after_step(ctx);
    }
  };
  auto base = std::make_shared<Base>();
  base->log = log;
  Outer outer(base);
  outer.log = log;
  Trainer(rig.spec, *rig.stream, rig.model(), outer, test::model_factory(rig.spec, *rig.stream)).train_task(0);
  CHECK(std::vector<std::string>(log->begin(), log->begin() + 6) ==
        std::vector<std::string>{"base.before_forward", "outer.before_forward", "base.after_backward", "outer.after_backward",
                                 "outer.after_step", "base.after_step"});
  CHECK(base->hook_count(Hook::after_step) == 2);  // the base's own bookkeeping runs too
}

TEST_CASE("MIGU masks a weight shared by the head and an embedding through the head's mask", "[strategies][migu][tied]") {
  // A head tied to an embedding (as T5's lm_head and shared embedding) is one Parameter: the
  // head's row mask zeroes those rows of the summed gradient, the embedding's part included.
  MiguRig rig;
  struct Tied : Model {
    nn::Linear head{nullptr};
    Tied() { head = register_module("head", nn::Linear(6, 5, /*bias=*/false)); }
    torch::Tensor forward(const Batch& b) override {
      // "token" embedding with the head's weight (rows = vocabulary), then the head
      return head->forward(torch::embedding(head->weight, b.extra.at("ids")).mean(1));
    }
    torch::Tensor row_loss(const torch::Tensor& out, const Batch& b, const torch::Tensor&) override {
      return torch::nn::functional::cross_entropy(out, b.targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    }
    torch::Tensor sample_targets(const torch::Tensor& out, const Batch&, const torch::Tensor&, at::Generator&) override {
      return out.argmax(1);
    }
  };
  torch::manual_seed(2);
  auto model = std::make_shared<Tied>();
  auto migu = parse_spec(test::tiny_config(rig.dir.path()), "tiny.yaml", {parse_override("strategy={name: migu, threshold: 0.6}")})
                  .strategy.build(0);
  migu->setup(StrategyEnv{0, rig.stream.get(), torch::kCPU, nullptr});
  LossFn loss;
  TaskContext task{1, *model, *rig.stream, loss, nullptr, nullptr};
  migu->before_task(task);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  Batch b;
  b.extra["ids"] = torch::tensor({{0, 1, 2}, {3, 4, 1}, {2, 2, 0}, {4, 0, 3}});
  b.targets = torch::tensor({1, 3, 0, 2});
  StepContext step{1, 0, 0, *model, opt, *rig.stream, loss, b, 4, b, 1.0, {}, {}, {}};
  step.output = model->forward(step.batch);
  step.loss = step.task_loss(step.output, step.batch);
  step.loss.backward();
  torch::Tensor before = model->head->weight.grad().clone();
  migu->after_backward(step);
  torch::Tensor after = model->head->weight.grad();
  torch::Tensor zeroed = after.abs().sum(1).eq(0), had = before.abs().sum(1).gt(0);
  CHECK(zeroed.logical_and(had).sum().item<int64_t>() >= 1);  // masked rows lost the embedding's gradient too
  CHECK(zeroed.sum().item<int64_t>() <= 3);                    // T = 0.6 of 5 rows: at most ceil(2.4)
  torch::Tensor kept = zeroed.logical_not();
  CHECK(after.index({kept}).equal(before.index({kept})));      // kept rows bit-identical
}
