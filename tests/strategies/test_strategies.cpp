// strategies/: every hook is reached in the documented order; every registered strategy runs.
#include <catch2/catch.hpp>

#include <map>
#include <numeric>

#include <spdlog/spdlog.h>

#include "clrun/eval/evaluator.hpp"
#include "clrun/train/experiment.hpp"
#include "clrun/train/trainer.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

class Recording : public Strategy {
 public:
  std::vector<std::string> first_step;  ///< hooks of the first step, in order
  bool grads_seen = false, weights_moved = false, eval_seen = false;
  int tasks_before = 0, tasks_after = 0;
  torch::Tensor snapshot;

 protected:
  void on_before_task(TaskContext& ctx) override {
    ++tasks_before;
    int64_t n = 0;
    ctx.for_each_train_batch(ctx.task, 7, 0, [&](const Batch& b) { n += b.size(); });
    CHECK(n == ctx.stream.tasks[ctx.task].train_rows.size(0));
  }
  void on_before_forward(StepContext& ctx) override { note(ctx, "before_forward"); }
  void on_loss_terms(StepContext& ctx) override {
    note(ctx, "loss_terms");
    REQUIRE(ctx.output.defined());
    ctx.add_loss("probe", ctx.output.sum() * 0.0 + 0.5);
  }
  void on_before_backward(StepContext& ctx) override { note(ctx, "before_backward"); }
  void on_after_backward(StepContext& ctx) override {
    note(ctx, "after_backward");
    grads_seen = grads_seen || test::classifier(ctx.model).head->weight.grad().defined();
    snapshot = test::classifier(ctx.model).head->weight.detach().clone();
  }
  void on_after_step(StepContext& ctx) override {
    note(ctx, "after_step");
    weights_moved = weights_moved || !test::classifier(ctx.model).head->weight.detach().equal(snapshot);
  }
  void on_after_task(TaskContext&) override { ++tasks_after; }
  torch::Tensor on_eval_logits(const EvalContext&, torch::Tensor logits) override {
    eval_seen = true;
    return logits;
  }

 private:
  void note(const StepContext& ctx, const char* hook) {
    if (ctx.task == 0 && ctx.step == 0) first_step.emplace_back(hook);
  }
};

}  // namespace

TEST_CASE("the trainer reaches every hook, in order", "[strategies][hooks]") {
  test::TempDir dir("hooks");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml");
  auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
  auto model = std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  Recording strategy;
  Trainer trainer(spec, *stream, model, strategy, test::model_factory(spec, *stream));
  TaskStats stats = trainer.train_task(0);
  trainer.train_task(1);
  Evaluator(*stream, strategy, 64, true).evaluate(*model, 1);

  CHECK(strategy.first_step ==
        std::vector<std::string>{"before_forward", "loss_terms", "before_backward", "after_backward", "after_step"});
  for (std::size_t h = 0; h < kNumHooks; ++h) {
    INFO(to_string(static_cast<Hook>(h)));
    CHECK(strategy.hook_count(static_cast<Hook>(h)) > 0);
  }
  CHECK(strategy.tasks_before == 2);
  CHECK(strategy.tasks_after == 2);
  CHECK(strategy.grads_seen);
  CHECK(strategy.weights_moved);
  CHECK(strategy.eval_seen);
  CHECK(strategy.hook_count(Hook::after_step) == 2 * stats.steps);
  CHECK(stats.terms.at("probe") == Approx(0.5));
  CHECK(stats.steps == 2 * ((40 + 15) / 16));  // 2 epochs of 40 samples in batches of 16, last kept
}

namespace {
/// Every registered strategy, run once on the tiny stream (3 tasks of 2 classes, 2 epochs each).
const std::map<std::string, nlohmann::json>& smoke_runs() {
  static std::map<std::string, nlohmann::json> runs;
  if (!runs.empty()) return runs;
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("smoke");
  test::write_tiny_mnist(dir.path());
  std::map<std::string, nlohmann::json> done;
  for (const std::string& name : registries().strategies.names()) {
    std::vector<Override> overrides = {parse_override("strategy.name=" + name)};
    // RanPAC's default projection (M = 10000) means 10000^2 ridge solves: minutes on 2 cores
    if (name == "ranpac") overrides.push_back(parse_override("strategy.ranpac_dim=256"));
    // The LoRA family's default targets are T5's attention layers; here every Linear gets adapters.
    // (scale 1, and a gentler orthogonality weight than T5's 0.5 for these SGD steps).
    if (name == "lora" || name == "inclora" || name == "olora") {
      overrides.push_back(parse_override("strategy.targets=['*']"));
      overrides.push_back(parse_override("strategy.alpha=8"));
    }
    if (name == "olora") overrides.push_back(parse_override("strategy.lambda1=[0.01]"));
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", overrides);
    RunOptions options;
    options.out_dir = dir / ("run_" + name);
    done[name] = run_experiment(spec, options).metrics;
  }
  runs = std::move(done);
  return runs;
}
double acc(const nlohmann::json& matrix, int t, int i) { return matrix.at(t).at(i).get<double>(); }
}  // namespace

TEST_CASE("every registered strategy runs, learns and leaves its own traces", "[strategies][smoke]") {
  const auto& runs = smoke_runs();
  REQUIRE(runs.size() >= 11);
  for (const auto& [name, m] : runs) {
    INFO(name);
    CHECK(m.at("status") == "complete");
    const auto& R = m.at("accuracy").at("matrix");
    const auto& init = m.at("accuracy").at("random_init");
    REQUIRE(R.size() == 3);
    const auto& per_task = m.at("per_task");
    REQUIRE(per_task.size() == 3);
    int64_t steps = 0, samples = 0;
    for (int t = 0; t < 3; ++t) {
      INFO("task " << t);
      steps += per_task[t].at("steps").get<int64_t>();
      samples += per_task[t].at("samples").get<int64_t>();
      CHECK(std::isfinite(per_task[t].at("mean_loss").get<double>()));
      for (const auto& [term, value] : per_task[t].at("loss_terms").items()) {
        INFO(term);
        CHECK(std::isfinite(value.get<double>()));
      }
    }
    // the hooks ran once per optimizer step; evaluation: (1 + 3 rows) x 3 tasks, one batch each
    const auto& calls = m.at("strategy_hooks").at("calls");
    CHECK(calls.at("after_step").get<int64_t>() == steps);
    CHECK(calls.at("before_forward").get<int64_t>() == steps);
    CHECK(calls.at("eval_logits") == 12);
    CHECK(calls.at("eval_forward") == 12);
    CHECK(calls.at("before_task") == 3);

    if (name == "joint") {
      // trains once, at the last task: earlier rows are the untrained model's
      CHECK(per_task[0].at("steps") == 0);
      CHECK(R[0] == init);
      for (int i = 0; i < 3; ++i) CHECK(acc(R, 2, i) >= 90.0);
      continue;
    }
    // Learned: the untrained model scores tasks 1 and 2 (over 4 and 6 classes) near 0 here;
    // after training each task, it is right on nearly all of the task just learned.
    CHECK(acc(R, 0, 0) >= 90.0);
    // MIGU updates only the largest rows, and the LoRA family trains low-rank adapters on a frozen
    // MLP and head: new classes learn slowly in 2 epochs.
    const bool slow = name == "migu" || name == "lora" || name == "inclora" || name == "olora";
    if (!slow) {
      for (int t = 1; t < 3; ++t) {
        INFO("task " << t);
        CHECK(acc(R, t, t) >= 90.0);
        CHECK(acc(R, t, t) >= init[t].get<double>() + 40.0);
      }
    }
    // rows trained on: 2 epochs of each task's 40 (cumulative: of tasks 0..t), plus memory rows
    const bool replays = name == "replay" || name == "der" || name == "derpp";
    if (replays) CHECK(samples > 3 * 2 * 40);
    else if (name == "ranpac") CHECK(samples == 0);  // a frozen backbone: only the ridge head learns
    else CHECK(samples == (name == "cumulative" ? 2 * (40 + 80 + 120) : 3 * 2 * 40));
  }
}

TEST_CASE("strategy-specific state and loss terms in metrics.json", "[strategies][smoke]") {
  const auto& runs = smoke_runs();
  auto terms = [&](const std::string& name, int task) -> const nlohmann::json& {
    return runs.at(name).at("per_task").at(task).at("loss_terms");
  };
  auto state = [&](const std::string& name) -> const nlohmann::json& { return runs.at(name).at("strategy_state"); };
  // distillation / logit-matching terms: present from the task after the first, positive
  for (int t : {1, 2}) {
    INFO("task " << t);
    CHECK(terms("lwf", t).value("lwf", 0.0) > 0);
    CHECK(terms("der", t).value("der_mse", 0.0) > 0);
    CHECK(terms("derpp", t).value("der_mse", 0.0) > 0);
  }
  CHECK_FALSE(terms("lwf", 0).contains("lwf"));  // no teacher before the first task ends
  for (const std::string name : {"finetune", "joint", "cumulative", "replay", "agem"}) {
    INFO(name);
    for (int t = 0; t < 3; ++t) CHECK(terms(name, t).empty());
  }
  // memories: every current row offered (2 epochs x 3 tasks x 40), all kept (capacity 500)
  for (const std::string name : {"replay", "der", "derpp", "agem"}) {
    INFO(name);
    const auto& memory = state(name).at("memory");
    CHECK(memory.at("seen") == 240);
    CHECK(memory.at("size") == 240);
    CHECK(memory.at("per_class") == nlohmann::json({40, 40, 40, 40, 40, 40}));
  }
  // EWC: one Fisher per task, not zero
  const auto& fisher = state("ewc").at("fisher_per_task");
  REQUIRE(fisher.size() == 3);
  for (const auto& f : fisher) {
    CHECK(f.at("mean").get<double>() > 0);
    CHECK(f.at("max").get<double>() >= f.at("mean").get<double>());
  }
  // SI: a non-zero importance
  CHECK(state("si").at("mean_big_omega").get<double>() > 0);
  // MIGU: unmasked first task, masked later ones, only a fraction of the rows updated
  const auto& migu = state("migu").at("per_task");
  REQUIRE(migu.size() == 3);
  CHECK(migu[0].at("layers").at("backbone.fc0").at("masked") == false);
  for (int t : {1, 2}) {
    INFO("task " << t);
    const auto& fc0 = migu[t].at("layers").at("backbone.fc0");
    CHECK(fc0.at("masked") == true);
    CHECK(fc0.at("updated_fraction").get<double>() > 0);
    CHECK(fc0.at("updated_fraction").get<double>() < 0.5);
  }
  // SoTU: one merge per task keeping about `keep` (0.1) of the delta, a prototype head fitted
  // on each task; RanPAC: no merge, a ridge head with a searched lambda
  const auto& sotu = state("sotu").at("tasks");
  REQUIRE(sotu.size() == 3);
  for (const auto& t : sotu) {
    CHECK(t.at("kept_fraction").get<double>() == Approx(0.1).margin(0.03));
    CHECK(t.at("head").at("samples") == 40);
  }
  const auto& ranpac = state("ranpac").at("tasks");
  REQUIRE(ranpac.size() == 3);
  for (const auto& t : ranpac) {
    CHECK_FALSE(t.contains("kept_fraction"));
    CHECK(t.at("head").at("lambda").get<double>() > 0);
  }
}

// EWC and SI add their penalty in after_backward (they write its gradient themselves): the
// Trainer must still count it in the task's loss terms and mean loss.
TEST_CASE("EWC's and SI's penalties appear in metrics.json's loss terms", "[strategies][smoke]") {
  const auto& runs = smoke_runs();
  for (const std::string name : {"ewc", "si"}) {
    INFO(name);
    for (int t : {1, 2}) {
      INFO("task " << t);
      const auto& terms = runs.at(name).at("per_task").at(t).at("loss_terms");
      CHECK(terms.value(name, 0.0) > 0);
    }
  }
}

TEST_CASE("joint trains once on everything, cumulative on all tasks so far", "[strategies]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("bounds");
  test::write_tiny_mnist(dir.path());
  auto run = [&](const std::string& name) {
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                     {parse_override("strategy.name=" + name), parse_override("train.epochs=1")});
    RunOptions options;
    options.out_dir = dir / name;
    return run_experiment(spec, options).metrics;
  };
  nlohmann::json joint = run("joint");
  CHECK(joint["per_task"][0]["samples"] == 0);
  CHECK(joint["per_task"][2]["samples"] == 120);
  CHECK(joint["per_task"][2]["trained_on"] == nlohmann::json({0, 1, 2}));
  nlohmann::json cumulative = run("cumulative");
  CHECK(cumulative["per_task"][1]["samples"] == 80);
  CHECK(cumulative["per_task"][1]["trained_on"] == nlohmann::json({0, 1}));
}

TEST_CASE("cumulative on a domain stream gives each sample its own task's transform", "[strategies][domain]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("domain");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override("stream={name: permuted, num_tasks: 3, dataset: {name: mnist, root: " + dir.path() + "}}"),
                                    parse_override("strategy.name=cumulative"), parse_override("train.epochs=1")});
  auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
  // A batch from the union of tasks 0..2 must equal each task's own transform of its rows.
  class Check : public Strategy {
   public:
    explicit Check(const Stream& s) {
      for (const Task& t : s.tasks) inputs_.push_back(s.inputs(s.train, t.train_rows, t));
    }
    std::vector<int> training_tasks(int task, int) const override {
      std::vector<int> all(task + 1);
      std::iota(all.begin(), all.end(), 0);
      return all;
    }
    int64_t matched = 0, batches = 0;

   protected:
    void on_before_forward(StepContext& ctx) override {
      ++batches;
      // every input row equals the transform of some task applied to some training image
      for (int64_t i = 0; i < ctx.batch.size(); ++i) {
        bool found = false;
        for (int t = 0; t <= ctx.task && !found; ++t)
          found = (inputs_[t] - ctx.batch.inputs[i]).abs().flatten(1).amax(1).lt(1e-5).any().item<bool>();
        matched += found;
      }
    }

   private:
    std::vector<torch::Tensor> inputs_;  ///< every training input of each task, transformed
  } check(*stream);
  auto model = std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  Trainer trainer(spec, *stream, model, check, test::model_factory(spec, *stream));
  TaskStats stats = trainer.train_task(2);
  CHECK(stats.samples == 3 * 200);
  CHECK(check.matched == stats.samples);
}

namespace {
/// A tiny stream and a fresh model, for driving a test-local strategy through Trainer and Evaluator.
struct HookRig {
  test::TempDir dir{"hook_edits"};
  ExperimentSpec spec;
  std::shared_ptr<Stream> stream;
  std::shared_ptr<Classifier> model;
  HookRig() {
    test::write_tiny_mnist(dir.path());
    spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml");
    stream = spec.stream.build(spec.dataset.build(), spec.seed);
    torch::manual_seed(7);
    model = std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  }
  TaskStats train(Strategy& strategy, int task) {
    return Trainer(spec, *stream, model, strategy, test::model_factory(spec, *stream)).train_task(task);
  }
};
}  // namespace

TEST_CASE("before_forward edits are what the step trains on", "[strategies][hooks][edits]") {
  SECTION("zeroed inputs: the first layer's weights get no gradient and nothing is learned") {
    struct ZeroInputs : Strategy {
      void on_before_forward(StepContext& ctx) override { ctx.batch.inputs = torch::zeros_like(ctx.batch.inputs); }
    };
    HookRig plain_rig, zero_rig;
    auto fc0 = [](Classifier& m) { return m.named_parameters()["backbone.fc0.weight"].detach().clone(); };
    const torch::Tensor plain_before = fc0(*plain_rig.model), zero_before = fc0(*zero_rig.model);
    REQUIRE(plain_before.equal(zero_before));  // same initial weights
    Strategy plain;
    ZeroInputs zero;
    plain_rig.train(plain, 0);
    zero_rig.train(zero, 0);
    TaskStats learned = plain_rig.train(plain, 0);  // the same task again: the loss of a learned task
    TaskStats blind = zero_rig.train(zero, 0);
    CHECK_FALSE(fc0(*plain_rig.model).equal(plain_before));
    CHECK(fc0(*zero_rig.model).equal(zero_before));  // dL/dW = g^T x = 0 for x = 0
    // every input looks the same: the loss cannot go below the two-class entropy by much
    CHECK(learned.mean_loss < 0.5);
    CHECK(blind.mean_loss > 0.6);
  }
  SECTION("replaced targets: a model taught 'always class 0' scores exactly class 0's half of task 0") {
    struct AllZero : Strategy {
      void on_before_forward(StepContext& ctx) override { ctx.batch.targets = torch::zeros_like(ctx.batch.targets); }
    };
    HookRig rig;
    AllZero strategy;
    rig.train(strategy, 0);
    rig.train(strategy, 0);
    Strategy plain;
    EvalRow row = Evaluator(*rig.stream, plain, 64, true).evaluate(*rig.model, 0);
    CHECK(row.correct[0] == 10);  // the 10 test rows of class 0, none of class 1
    CHECK(row.correct_task_aware[0] == 10);
  }
}

TEST_CASE("eval_logits edits are what the evaluator scores", "[strategies][hooks][edits]") {
  HookRig rig;
  Strategy plain;
  rig.train(plain, 0);
  rig.train(plain, 1);
  EvalRow honest = Evaluator(*rig.stream, plain, 64, true).evaluate(*rig.model, 1);
  REQUIRE(honest.correct[1] > 10);  // task 1 was just learned
  // a large constant on class 3 (task 1): every row of tasks 0..1 scored over classes 0..3 is
  // predicted 3, and task 1 task-aware too; task 2's rows are scored over 0..5, so also 3
  struct Push : Strategy {
    int64_t seen_trained = -2;
    torch::Tensor on_eval_logits(const EvalContext& ctx, torch::Tensor logits) override {
      seen_trained = ctx.trained_task;
      return logits.index_add(1, torch::tensor({int64_t{3}}), torch::full({logits.size(0), 1}, 1e6));
    }
  } push;
  EvalRow pushed = Evaluator(*rig.stream, push, 64, true).evaluate(*rig.model, 1);
  CHECK(push.seen_trained == 1);
  CHECK(pushed.correct == std::vector<int64_t>{0, 10, 0});
  // task-aware: task 0's mask removes class 3 (unchanged), task 1's keeps it (only class 3 right)
  CHECK(pushed.correct_task_aware[0] == honest.correct_task_aware[0]);
  CHECK(pushed.correct_task_aware[1] == 10);
}
