// strategies/ toolkit: batches, per-row logit masks and weights, parameter groups, Linear taps,
// and task-IL with rows of several tasks.
#include <catch2/catch.hpp>

#include <spdlog/spdlog.h>

#include "clrun/eval/evaluator.hpp"
#include "clrun/train/experiment.hpp"
#include "clrun/train/trainer.hpp"
#include "support.hpp"

using namespace clrun;

TEST_CASE("Batch::cat keeps fields, fills weights with each part's mean and index with -1", "[strategies][toolkit]") {
  Batch a{torch::ones({2, 3}), torch::tensor({1, 2}), torch::tensor({0, 0}), torch::tensor({5, 6}), {}, {}};
  Batch b{torch::zeros({3, 3}), torch::tensor({3, 4, 5}), torch::tensor({1, 1, 1}), {}, torch::full({3}, 0.25), {}};
  Batch c = Batch::cat({a, b});
  CHECK(c.size() == 5);
  CHECK(c.weights.allclose(torch::tensor({0.5f, 0.5f, 0.25f, 0.25f, 0.25f})));
  CHECK(c.index.equal(torch::tensor({5, 6, -1, -1, -1})));
  CHECK(c.task_ids.equal(torch::tensor({0, 0, 1, 1, 1})));
  CHECK(c.select(torch::tensor({4, 0})).targets.equal(torch::tensor({5, 1})));
}

TEST_CASE("the task loss masks each row by its own task and honours row weights", "[strategies][toolkit]") {
  torch::manual_seed(0);
  auto spec = parse_spec("backbone: {name: mlp, hidden: [5]}", "x.yaml");
  Classifier model(spec.backbone.build(std::vector<int64_t>{1, 2, 2}), 4);
  torch::Tensor masks = torch::stack({Evaluator::logit_mask({0, 1}, 4, torch::kCPU), Evaluator::logit_mask({2, 3}, 4, torch::kCPU)});
  torch::Tensor out = torch::randn({3, 4});
  Batch b;
  b.targets = torch::tensor({1, 3, 2});
  b.task_ids = torch::tensor({0, 1, 1});
  auto ce = [&](int64_t row, std::vector<int64_t> classes, int64_t target) {
    torch::Tensor logits = out[row].index_select(0, torch::tensor(classes));
    return -torch::log_softmax(logits, 0)[target].item<double>();
  };
  std::vector<double> expected = {ce(0, {0, 1}, 1), ce(1, {2, 3}, 1), ce(2, {2, 3}, 0)};
  torch::Tensor rows = model.row_loss(out, b, masks);
  for (int i = 0; i < 3; ++i) CHECK(rows[i].item<double>() == Approx(expected[i]).epsilon(1e-5));
  CHECK(model.task_loss(out, b, masks).item<double>() == Approx((expected[0] + expected[1] + expected[2]) / 3).epsilon(1e-5));
  b.weights = torch::tensor({1.0f, 0.0f, 2.0f});
  CHECK(model.task_loss(out, b, masks).item<double>() == Approx(expected[0] + 2 * expected[2]).epsilon(1e-5));
  // without masks every logit counts
  b.weights = torch::Tensor();
  CHECK(model.task_loss(out, b, {}).item<double>() ==
        Approx(torch::cross_entropy_loss(out, b.targets).item<double>()));
}

TEST_CASE("parameters outside the strategy's groups are frozen: no gradient, no decay, no momentum", "[strategies][toolkit]") {
  test::TempDir dir("groups");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override("train.optimizer={name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.1}")});
  auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
  auto model = std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  struct HeadOnly : Strategy {
    std::vector<ParamGroup> parameter_groups(TaskContext& ctx) override {
      return {ParamGroup{test::classifier(ctx.model).head->parameters(), 0.5}};
    }
    double seen_lr = 0;
    void on_after_step(StepContext& ctx) override { seen_lr = ctx.optimizer.param_groups()[0].options().get_lr(); }
  } strategy;
  std::vector<torch::Tensor> before = snapshot_parameters(*model);
  Trainer trainer(spec, *stream, model, strategy, test::model_factory(spec, *stream));
  trainer.train_task(0);
  trainer.train_task(1);
  auto params = model->named_parameters();
  std::size_t i = 0;
  for (const auto& item : params) {
    INFO(item.key());
    const bool head = item.key().rfind("head.", 0) == 0;
    CHECK(item.value().equal(before[i++]) != head);
    if (!head) CHECK_FALSE(item.value().grad().defined());
  }
  CHECK(strategy.seen_lr == Approx(0.1 * 0.5));  // the group's lr_scale
}

TEST_CASE("Linear taps see input, pre-activation output and output gradient, never under no-grad", "[strategies][toolkit][taps]") {
  torch::manual_seed(1);
  auto spec = parse_spec("backbone: {name: mlp, hidden: [6]}", "x.yaml");
  Classifier model(spec.backbone.build(std::vector<int64_t>{1, 2, 2}), 3);
  struct Recorder : nn::Tap {
    std::vector<std::string> order;
    std::map<nn::TappedLayer*, torch::Tensor> in, out, grad;
    void on_forward(nn::TappedLayer& l, const torch::Tensor& x, const torch::Tensor& y) override {
      in[&l] = x.detach().clone();
      out[&l] = y.detach().clone();
    }
    bool wants_output_grad() const override { return true; }
    void on_output_grad(nn::TappedLayer& l, const torch::Tensor& g) override { grad[&l] = g.clone(); }
  } tap;
  auto layers = nn::linear_layers(model);
  REQUIRE(layers.size() == 2);
  CHECK(layers[0].first == "backbone.fc0");
  CHECK(layers[1].first == "head");
  std::vector<nn::TappedLayer*> all = {layers[0].second.get(), layers[1].second.get()};
  torch::Tensor x = torch::randn({4, 1, 2, 2});
  {
    nn::TapGuard guard(tap, all);
    torch::Tensor logits = model.logits(x);
    logits.pow(2).sum().backward();
    nn::LinearImpl* fc0 = layers[0].second.get();
    nn::LinearImpl* head = layers[1].second.get();
    // fc0's output before the in-place ReLU, and its gradient w.r.t. that pre-activation
    torch::Tensor pre = torch::linear(x.flatten(1), fc0->weight, fc0->bias).detach();
    CHECK(tap.out[fc0].allclose(pre));
    CHECK(tap.in[head].allclose(pre.relu()));
    CHECK(tap.grad[head].allclose(2 * logits.detach()));
    // dL/dW of fc0 = grad^T x, the same as autograd's
    CHECK((tap.grad[fc0].t().mm(tap.in[fc0])).allclose(fc0->weight.grad(), 1e-5, 1e-6));
    tap.in.clear();
    torch::NoGradGuard no_grad;
    model.logits(x);
    CHECK(tap.in.empty());
  }
  model.logits(x);  // detached: nothing recorded
  CHECK(tap.in.empty());
}

TEST_CASE("task-IL with rows of several tasks: each row is masked by its own task", "[strategies][toolkit][task-il]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("taskil");
  test::write_tiny_mnist(dir.path());
  for (const std::string strategy : {"cumulative", "joint"}) {
    INFO(strategy);
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                     {parse_override("stream.scenario=task-il"), parse_override("strategy.name=" + strategy)});
    RunOptions options;
    options.out_dir = dir / strategy;
    nlohmann::json m = run_experiment(spec, options).metrics;
    const auto& last = m["per_task"][2];
    // One mask for every row would give earlier tasks' rows a loss of about 1e30.
    CHECK(last["mean_loss"].get<double>() < 5.0);
    CHECK(m["metrics"]["final_average_accuracy"].get<double>() > 80.0);
  }
}
