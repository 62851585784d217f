// strategies/: every hook is reached in the documented order; every registered strategy runs.
#include <catch2/catch.hpp>

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

TEST_CASE("every registered strategy completes a one-epoch run", "[strategies][smoke]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("smoke");
  test::write_tiny_mnist(dir.path());
  for (const std::string& name : registries().strategies.names()) {
    INFO(name);
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                     {parse_override("strategy.name=" + name), parse_override("train.epochs=1")});
    RunOptions options;
    options.out_dir = dir / ("run_" + name);
    RunResult r = run_experiment(spec, options);
    CHECK(r.metrics.at("status") == "complete");
    CHECK(r.metrics.at("accuracy").at("matrix").size() == 3);
    CHECK(r.metrics.at("per_task").size() == 3);
  }
}

TEST_CASE("joint trains once on everything; cumulative on all tasks so far", "[strategies]") {
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
