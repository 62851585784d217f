// strategies/ baselines: each method's defining property on tiny synthetic streams, and resume
// after an interruption giving the same numbers as an uninterrupted run, for every strategy.
#include <catch2/catch.hpp>

#include <spdlog/spdlog.h>

#include "clrun/core/interrupt.hpp"
#include "clrun/core/seed.hpp"
#include "clrun/strategies/fisher.hpp"
#include "clrun/strategies/memory.hpp"
#include "clrun/train/experiment.hpp"
#include "clrun/train/trainer.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

/// A tiny stream, a model and a task context over it, for driving hooks and estimators by hand.
struct Rig {
  test::TempDir dir{"rig"};
  ExperimentSpec spec;
  std::shared_ptr<Stream> stream;
  std::shared_ptr<Classifier> model;
  LossFn loss;

  explicit Rig(const std::string& backbone = "{name: mlp, hidden: [16, 8]}", const std::vector<Override>& extra = {}) {
    test::write_tiny_mnist(dir.path());
    std::vector<Override> o = {parse_override("backbone=" + backbone)};
    o.insert(o.end(), extra.begin(), extra.end());
    spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", o);
    stream = spec.stream.build(spec.dataset.build(), spec.seed);
    torch::manual_seed(5);
    model = std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  }
  TaskContext context(int task) {
    return TaskContext{task, *model, *stream, loss, nullptr, [this](int t, int64_t bs, int64_t limit, const auto& fn) {
                         for_each_train_batch(*stream, t, bs, limit, fn);
                       }};
  }
  std::shared_ptr<Strategy> strategy(const std::string& yaml) {
    return parse_spec(test::tiny_config(dir.path()), "tiny.yaml", {parse_override("strategy=" + yaml)}).strategy.build(spec.seed);
  }
};

double max_abs_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].defined()) m = std::max(m, (a[i] - b[i]).abs().max().item<double>());
  return m;
}

}  // namespace

TEST_CASE("batched per-sample Fisher equals a per-sample loop", "[strategies][ewc][fisher]") {
  for (const std::string backbone : {"{name: mlp, hidden: [16, 8]}", "{name: cnn, channels: [3], hidden: 8}"}) {
    INFO(backbone);
    Rig rig(backbone);
    TaskContext ctx = rig.context(0);
    FisherOptions o;
    o.fisher_batch_size = 7;
    auto gen = make_generator(1, {9});
    std::vector<torch::Tensor> batched = estimate_fisher(ctx, o, gen);
    std::vector<torch::Tensor> loop = estimate_fisher_per_sample_loop(ctx, o, gen);
    double scale = 0;
    for (const auto& f : loop) scale = std::max(scale, f.abs().max().item<double>());
    REQUIRE(scale > 0);
    CHECK(max_abs_diff(batched, loop) < 1e-5 * std::max(1.0, scale));
    // so does Mammoth's probability-weighted variant, and it differs from the plain one
    o.fisher_weighting = "probability";
    std::vector<torch::Tensor> weighted = estimate_fisher(ctx, o, gen);
    CHECK(max_abs_diff(weighted, estimate_fisher_per_sample_loop(ctx, o, gen)) < 1e-5 * std::max(1.0, scale));
    CHECK(max_abs_diff(weighted, loop) > 1e-7);
    o.fisher_weighting = "none";
    // the empirical Fisher is not the minibatch estimator
    o.fisher = "empirical_batch";
    CHECK(max_abs_diff(estimate_fisher(ctx, o, gen), loop) > 1e-6);
    for (auto& p : rig.model->parameters()) CHECK(p.requires_grad());  // flags restored
  }
}

TEST_CASE("EWC: penalty 0 at the anchor, gradient lambda F (theta - theta*)", "[strategies][ewc]") {
  for (const std::string mode : {"separate", "online"}) {
    INFO(mode);
    Rig rig;
    auto ewc = rig.strategy("{name: ewc, lambda: 3.0, mode: " + mode + ", fisher_batch_size: 9}");
    Trainer trainer(rig.spec, *rig.stream, rig.model, *ewc, test::model_factory(rig.spec, *rig.stream));
    trainer.train_task(0);  // after_task: anchor and Fisher at the trained weights
    TaskContext ctx = rig.context(0);
    FisherOptions o;
    o.fisher_batch_size = 9;
    auto gen = make_generator(0, {0});
    std::vector<torch::Tensor> fisher = estimate_fisher(ctx, o, gen);
    std::vector<torch::Tensor> anchor = snapshot_parameters(*rig.model);

    torch::optim::SGD opt(rig.model->parameters(), torch::optim::SGDOptions(0.1));
    auto penalty_step = [&]() {
      for (auto& p : rig.model->parameters()) p.mutable_grad() = torch::zeros_like(p);
      StepContext step{1, 0, 0, *rig.model, opt, *rig.stream, rig.loss, {}, 0, {}, 1.0, {}, torch::zeros({}), {}};
      ewc->after_backward(step);
      REQUIRE(step.terms.size() == 1);
      return step.terms[0].second.item<double>();
    };
    CHECK(std::abs(penalty_step()) < 1e-6);
    for (auto& p : rig.model->parameters()) CHECK(p.grad().abs().max().item<double>() < 1e-6);

    torch::manual_seed(3);
    std::vector<torch::Tensor> delta;
    {
      torch::NoGradGuard no_grad;
      for (auto& p : rig.model->parameters()) delta.push_back(torch::randn_like(p) * 0.1), p.add_(delta.back());
    }
    double value = penalty_step(), expected = 0;
    auto params = rig.model->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      CHECK(params[i].grad().allclose(3.0 * fisher[i] * delta[i], 1e-4, 1e-6));
      expected += 0.5 * 3.0 * (fisher[i] * delta[i].square()).sum().item<double>();
    }
    CHECK(value == Approx(expected).epsilon(1e-3));
  }
}

TEST_CASE("A-GEM's projected gradient never points against the reference", "[strategies][agem]") {
  torch::manual_seed(4);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<torch::Tensor> g = {torch::randn({3, 4}), torch::randn({5})};
    std::vector<torch::Tensor> r = {torch::randn({3, 4}), torch::randn({5})};
    auto dot = [](const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
      return (a[0] * b[0]).sum().item<double>() + (a[1] * b[1]).sum().item<double>();
    };
    const double before = dot(g, r);
    std::vector<torch::Tensor> original = {g[0].clone(), g[1].clone()};
    agem_project(g, r);
    CHECK(dot(g, r) >= -1e-5);
    if (before >= 0) CHECK(max_abs_diff(g, original) == 0);  // agreeing gradients are left alone
    else CHECK(std::abs(dot(g, r)) < 1e-4);                    // conflicting ones end on the boundary
  }
}

namespace {
/// A stream of `n` samples whose single pixel holds the sample's index (labels `label_of`).
std::shared_ptr<Stream> index_stream(int64_t n, const std::function<int64_t(int64_t)>& label_of) {
  Dataset d;
  d.name = "indices";
  d.num_classes = 10;
  for (int c = 0; c < 10; ++c) d.class_names.push_back(std::to_string(c));
  d.mean = {0};
  d.std = {1};
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < n; ++i) labels.push_back(label_of(i));
  d.train = {torch::arange(n, torch::kInt64).remainder(256).to(torch::kUInt8).view({n, 1, 1, 1}), torch::tensor(labels)};
  d.test = d.train;
  auto s = std::make_shared<Stream>("test", d, Scenario::class_il, ClassOrder{}.resolve(10, "x"));
  Task t;
  t.train_rows = torch::arange(n, torch::kInt64);
  t.test_rows = t.train_rows;
  s->tasks.push_back(t);
  return s;
}
Batch rows_batch(const Stream& s, int64_t from, int64_t to) {
  Batch b;
  b.index = torch::arange(from, to, torch::kInt64);
  b.targets = s.train.labels.index_select(0, b.index);
  b.task_ids = torch::zeros_like(b.index);
  return b;
}
}  // namespace

TEST_CASE("reservoir memory: every sample of the stream is kept with probability M/N", "[strategies][memory]") {
  auto stream = index_stream(100, [](int64_t i) { return i % 10; });
  std::vector<int> kept(100, 0);
  const int trials = 400;
  for (int trial = 0; trial < trials; ++trial) {
    ReplayMemory memory(10, ReplayMemory::Policy::reservoir);
    auto gen = make_generator(static_cast<uint64_t>(trial), {77});
    for (int64_t s = 0; s < 100; s += 10) memory.add(*stream, rows_batch(*stream, s, s + 10), {}, 0, gen);
    CHECK(memory.size() == 10);
    Batch all = memory.sample(*stream, 10, gen);
    for (int64_t i = 0; i < 10; ++i) ++kept[static_cast<int>(std::lround(all.inputs[i].item<double>() * 255))];  // inputs are x / 255
  }
  int early = 0, late = 0;
  for (int i = 0; i < 100; ++i) {
    CHECK(kept[i] / double(trials) == Approx(0.1).margin(0.065));  // ~4.3 binomial sd
    (i < 50 ? early : late) += kept[i];
  }
  CHECK(early / double(early + late) == Approx(0.5).margin(0.05));
}

TEST_CASE("class-balanced memory keeps equal slots per seen class", "[strategies][memory]") {
  // 300 samples: 200 of class 0, then 50 of class 1, then 50 of class 2
  auto stream = index_stream(300, [](int64_t i) { return i < 200 ? 0 : i < 250 ? 1 : 2; });
  ReplayMemory memory(30, ReplayMemory::Policy::class_balanced);
  auto gen = make_generator(3, {1});
  for (int64_t s = 0; s < 300; s += 25) memory.add(*stream, rows_batch(*stream, s, s + 25), {}, 0, gen);
  CHECK(memory.class_counts() == std::vector<int64_t>{10, 10, 10});
  ReplayMemory reservoir(30, ReplayMemory::Policy::reservoir);
  for (int64_t s = 0; s < 300; s += 25) reservoir.add(*stream, rows_batch(*stream, s, s + 25), {}, 0, gen);
  CHECK(reservoir.class_counts()[0] > 12);  // the reservoir follows the stream's imbalance
}

TEST_CASE("SI accumulates a non-zero importance, LwF(alpha 0) and DER++(0, 0) equal finetune bit for bit",
          "[strategies][si][lwf][der]") {
  auto train_two = [](Rig& rig, Strategy& s) {
    Trainer trainer(rig.spec, *rig.stream, rig.model, s, test::model_factory(rig.spec, *rig.stream));
    trainer.train_task(0);
    trainer.train_task(1);
    return snapshot_parameters(*rig.model);
  };
  Rig base;
  Strategy finetune;
  std::vector<torch::Tensor> expected = train_two(base, finetune);
  for (const std::string yaml : {"{name: lwf, alpha: 0}", "{name: derpp, alpha: 0, beta: 0}", "{name: der, alpha: 0}"}) {
    INFO(yaml);
    Rig rig;
    auto s = rig.strategy(yaml);
    std::vector<torch::Tensor> got = train_two(rig, *s);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].equal(expected[i]));
  }
  Rig changed;
  auto lwf = changed.strategy("{name: lwf, alpha: 1}");
  CHECK(max_abs_diff(train_two(changed, *lwf), expected) > 0);

  Rig si_rig;
  auto si = si_rig.strategy("{name: si}");
  train_two(si_rig, *si);
  CHECK(si->describe().at("mean_big_omega").get<double>() > 0);
}

TEST_CASE("every strategy resumes after an interruption with the same numbers", "[strategies][resume]") {
  spdlog::set_level(spdlog::level::err);
  test::TempDir dir("resume_strategies");
  test::write_tiny_mnist(dir.path());
  const std::vector<std::string> strategies = {
      "{name: ewc, lambda: 10}", "{name: ewc, mode: online, gamma: 0.9, fisher: expected}", "{name: si}",
      "{name: lwf}", "{name: replay, memory_size: 30}", "{name: replay, memory_size: 30, policy: class_balanced}",
      "{name: der, memory_size: 30}", "{name: derpp, memory_size: 30}", "{name: agem, memory_size: 30}"};
  int k = 0;
  for (const std::string& yaml : strategies) {
    INFO(yaml);
    for (int stop_task : {1, 2}) {
      ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                       {parse_override("strategy=" + yaml), parse_override("backbone.dropout=0.1")});
      auto [expected, resumed] = test::run_interrupted_and_resumed(spec, dir / std::to_string(k++), stop_task, 2);
      CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
      CHECK(resumed["task_aware_accuracy"]["correct"] == expected["task_aware_accuracy"]["correct"]);
      CHECK(resumed["per_task"][2]["mean_loss"] == expected["per_task"][2]["mean_loss"]);
      CHECK(resumed["per_task"][2]["loss_terms"] == expected["per_task"][2]["loss_terms"]);
      CHECK(resumed["strategy_hooks"]["calls"] == expected["strategy_hooks"]["calls"]);
      CHECK(resumed["strategy_state"] == expected["strategy_state"]);
    }
  }
}

TEST_CASE("cumulative's past_fraction mixes a fixed share of each earlier task into training", "[strategies][cumulative]") {
  test::TempDir dir("cumulative_share");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override("strategy={name: cumulative, past_fraction: 0.25}")});
  RunOptions options;
  options.out_dir = dir / "run";
  nlohmann::json m = run_experiment(spec, options).metrics;
  // tasks of 40 training rows, 2 epochs: task t trains on 40 + 10 per earlier task
  for (int t = 0; t < 3; ++t) CHECK(m["per_task"][t]["samples"] == 2 * (40 + 10 * t));
  CHECK(m["per_task"][2]["trained_on"] == nlohmann::json({0, 1, 2}));
  // the share of a task is the same rows at every later task, and a subset of that task
  auto strategy = spec.strategy.build(spec.seed);
  auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
  torch::Tensor at1 = strategy->training_rows(1, 0, *stream), at2 = strategy->training_rows(2, 0, *stream);
  CHECK(at1.size(0) == 10);
  CHECK(torch::equal(at1, at2));
  CHECK(torch::isin(at1, stream->tasks[0].train_rows).all().item<bool>());
  CHECK(torch::equal(strategy->training_rows(2, 2, *stream), stream->tasks[2].train_rows));
}
