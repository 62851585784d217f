// train/: optimizers (serialisation round trip), schedulers, the training loop's bookkeeping.
#include <catch2/catch.hpp>

#include <sstream>

#include <spdlog/spdlog.h>

#include "clrun/train/trainer.hpp"
#include "support.hpp"

using namespace clrun;

namespace {
std::vector<torch::Tensor> make_params() {
  torch::manual_seed(0);
  return {torch::randn({4, 3}).requires_grad_(), torch::randn({3}).requires_grad_()};
}
void fake_step(torch::optim::Optimizer& opt, std::vector<torch::Tensor>& params, int k) {
  opt.zero_grad();
  torch::Tensor loss = (params[0].sum() * (k + 1)).pow(2) + params[1].pow(3).sum();
  loss.backward();
  opt.step();
}
std::vector<torch::optim::OptimizerParamGroup> groups(const std::vector<torch::Tensor>& params) {
  return {torch::optim::OptimizerParamGroup(params)};
}
std::vector<torch::Tensor> clone_all(const std::vector<torch::Tensor>& ps) {
  std::vector<torch::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().requires_grad_());
  return out;
}
}  // namespace

TEST_CASE("a reloaded optimizer continues exactly like one that never stopped", "[train][optim]") {
  for (const std::string name : {"sgd", "adam", "adamw"}) {
    INFO(name);
    auto spec = parse_spec("train: {optimizer: {name: " + name + (name == "sgd" ? ", momentum: 0.9" : "") + "}}", "x.yaml");
    auto a = make_params();
    auto opt_a = spec.train.optimizer.build(groups(a));
    for (int k = 0; k < 3; ++k) fake_step(*opt_a, a, k);
    // save, then restore into fresh parameters and a fresh optimizer
    torch::serialize::OutputArchive out;
    opt_a->save(out);
    std::ostringstream buffer;
    out.save_to(buffer);
    auto b = clone_all(a);
    auto opt_b = spec.train.optimizer.build(groups(b));
    torch::serialize::InputArchive in;
    std::istringstream read(buffer.str());
    in.load_from(read);
    opt_b->load(in);
    for (int k = 3; k < 6; ++k) {
      fake_step(*opt_a, a, k);
      fake_step(*opt_b, b, k);
    }
    CHECK(a[0].equal(b[0]));
    CHECK(a[1].equal(b[1]));
  }
}

TEST_CASE("schedulers give PyTorch's learning rates", "[train][scheduler]") {
  auto sched = [](const std::string& yaml) { return parse_spec("train: {scheduler: " + yaml + "}", "x.yaml").train.scheduler.build(); };
  auto constant = sched("constant");
  CHECK(constant->lr(0.1, 5, 10) == 0.1);
  auto cosine = sched("{name: cosine, eta_min: 0.001}");
  CHECK(cosine->lr(0.1, 0, 10) == Approx(0.1));
  CHECK(cosine->lr(0.1, 5, 10) == Approx(0.001 + (0.1 - 0.001) * 0.5));
  CHECK(cosine->lr(0.1, 10, 10) == Approx(0.001));
  CHECK(cosine->interval == Scheduler::Interval::epoch);
  auto step = sched("{name: step, milestones: [2, 4], gamma: 0.5, interval: step}");
  CHECK(step->lr(1.0, 1, 10) == Approx(1.0));
  CHECK(step->lr(1.0, 2, 10) == Approx(0.5));
  CHECK(step->lr(1.0, 7, 10) == Approx(0.25));
  CHECK(step->interval == Scheduler::Interval::step);
  auto warm = sched("{name: cosine, warmup: 1}");
  CHECK(warm->lr(1.0, 0, 5) == Approx(0.5));
  CHECK(warm->lr(1.0, 1, 5) == Approx(1.0));
}

namespace {
struct Setup {
  test::TempDir dir{"train"};
  ExperimentSpec spec;
  std::shared_ptr<Stream> stream;
  explicit Setup(const std::vector<Override>& overrides = {}) {
    test::write_tiny_mnist(dir.path());
    spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", overrides);
    stream = spec.stream.build(spec.dataset.build(), spec.seed);
  }
  std::shared_ptr<Classifier> model() {
    torch::manual_seed(11);
    return std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  }
  ModelFactory factory() const { return test::model_factory(spec, *stream); }
};
}  // namespace

TEST_CASE("training is deterministic given the seed and learns the task", "[train]") {
  Setup s;
  Strategy plain_a, plain_b;
  auto a = s.model(), b = s.model();
  Trainer ta(s.spec, *s.stream, a, plain_a, s.factory()), tb(s.spec, *s.stream, b, plain_b, s.factory());
  TaskStats first = ta.train_task(0);
  tb.train_task(0);
  CHECK(a->head->weight.equal(b->head->weight));
  CHECK(first.samples == 2 * 40);
  CHECK(std::isfinite(first.mean_loss));
  TaskStats second = ta.train_task(0);  // same task again: the loss has dropped
  CHECK(second.mean_loss < first.mean_loss);
}

TEST_CASE("iterations, drop_last, grad clipping and the logits convention", "[train]") {
  SECTION("iterations override epochs") {
    Setup s({parse_override("train.iterations=5")});
    Strategy plain;
    auto m = s.model();
    CHECK(Trainer(s.spec, *s.stream, m, plain, s.factory()).train_task(0).steps == 5);
  }
  SECTION("drop_last drops the partial batch") {
    Setup s({parse_override("train.drop_last=true"), parse_override("train.epochs=1")});
    Strategy plain;
    auto m = s.model();
    TaskStats st = Trainer(s.spec, *s.stream, m, plain, s.factory()).train_task(0);
    CHECK(st.steps == 2);
    CHECK(st.samples == 32);
  }
  SECTION("grad clipping bounds each update") {
    Setup s({parse_override("train.grad_clip=1e-6"), parse_override("train.optimizer={name: sgd, lr: 1.0}"),
             parse_override("train.iterations=1")});
    Strategy plain;
    auto m = s.model();
    std::vector<torch::Tensor> before;
    for (const auto& p : m->parameters()) before.push_back(p.detach().clone());
    Trainer(s.spec, *s.stream, m, plain, s.factory()).train_task(0);
    double moved = 0;
    auto params = m->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) moved += (params[i].detach() - before[i]).pow(2).sum().item<double>();
    CHECK(std::sqrt(moved) <= 1.01e-6);
    CHECK(std::sqrt(moved) > 0);
  }
  SECTION("logits: current trains only the current task's head rows") {
    Setup s({parse_override("train.logits=current"), parse_override("train.optimizer={name: sgd, lr: 0.1}")});
    Strategy plain;
    auto m = s.model();
    torch::Tensor before = m->head->weight.detach().clone();
    Trainer(s.spec, *s.stream, m, plain, s.factory()).train_task(1);  // classes 2, 3
    torch::Tensor moved = (m->head->weight.detach() - before).abs().sum(1);
    CHECK(moved[2].item<float>() > 0);
    CHECK(moved[0].item<float>() == 0);
    CHECK(moved[9].item<float>() == 0);
  }
}

TEST_CASE("task-IL end to end: every task scored over its own classes, well above chance", "[train][task-il]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("taskil_e2e");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", {parse_override("stream.scenario=task-il")});
  RunOptions options;
  options.out_dir = dir / "run";
  nlohmann::json m = run_experiment(spec, options).metrics;
  CHECK(m["scenario"] == "task-il");
  CHECK(m["conventions"]["logits"] == "current");
  CHECK_FALSE(m.contains("task_aware_accuracy"));
  const auto& R = m["accuracy"]["matrix"];
  REQUIRE(R.size() == 3);
  // two classes per task: chance is 50%; finetune with masked heads keeps old tasks well above it
  for (int i = 0; i < 3; ++i) {
    INFO("task " << i);
    CHECK(R[i][i].get<double>() >= 90.0);
    CHECK(R[2][i].get<double>() >= 75.0);
  }
  // an untrained model scored over a task's two classes is near chance, nowhere near the trained one
  CHECK(m["metrics"]["final_average_accuracy"].get<double>() >= 85.0);
}

TEST_CASE("a CNN backbone learns", "[train][cnn]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("cnn");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override("backbone={name: cnn, channels: [4, 8], hidden: 16}"),
                                    parse_override("stream.num_tasks=1"), parse_override("train.epochs=10")});
  RunOptions options;
  options.out_dir = dir / "run";
  nlohmann::json m = run_experiment(spec, options).metrics;
  CHECK(m["config"]["backbone"]["name"] == "cnn");
  CHECK(m["model"]["parameters"] == (1 * 9 + 1) * 4 + (4 * 9 + 1) * 8 + (8 * 3 * 3 + 1) * 16 + (16 + 1) * 10);
  // the untrained net's loss is about ln 10; after 30 steps it is right on nearly all of task 0
  CHECK(m["accuracy"]["matrix"][0][0].get<double>() >= 90.0);
  CHECK(m["per_task"][0]["mean_loss"].get<double>() < 1.2);
}

TEST_CASE("divergence is caught at a progress update, before the epoch ends", "[train][diverged]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("divergence");
  test::write_tiny_mnist(dir.path());
  // 40 rows per task at batch 4: 10 steps an epoch; lr 1e30 overflows within a few steps.
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override("train.batch_size=4"), parse_override("train.optimizer.lr=1e30")});
  auto diverged_at = [&](Progress* progress) -> int64_t {
    auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
    auto model = std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
    auto strategy = spec.strategy.build(spec.seed);
    Trainer trainer(spec, *stream, model, *strategy, test::model_factory(spec, *stream));
    trainer.set_progress(progress);
    try {
      trainer.train_task(0);
    } catch (const Diverged& e) {
      CHECK(e.task == 0);
      CHECK(e.epoch == 0);
      return e.steps;
    }
    FAIL("did not diverge");
    return -1;
  };
  CHECK(diverged_at(nullptr) == 10);  // only the end-of-epoch check
  Progress every_step(/*bar=*/false, /*log_every_seconds=*/0.0);
  int64_t steps = diverged_at(&every_step);
  CHECK(steps >= 1);
  CHECK(steps < 10);
}
