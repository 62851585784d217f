// strategies/sotu: the merge against fine-tuning, masks (fraction, independence, seeds), the
// heads against their closed forms, the frozen RanPAC baseline, the base-session anchor, resume.
#include <catch2/catch.hpp>

#include "clrun/eval/evaluator.hpp"
#include "clrun/train/experiment.hpp"
#include "clrun/train/trainer.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

struct SotuRig {
  test::TempDir dir{"sotu"};
  ExperimentSpec spec;
  std::shared_ptr<Stream> stream;
  explicit SotuRig(const std::string& strategy, const std::vector<Override>& extra = {}) {
    test::write_tiny_mnist(dir.path());
    std::vector<Override> all = {parse_override("strategy=" + strategy), parse_override("train.epochs=1")};
    all.insert(all.end(), extra.begin(), extra.end());
    spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", all);
    stream = spec.stream.build(spec.dataset.build(), spec.seed);
  }
  std::shared_ptr<Classifier> model() {
    torch::manual_seed(8);
    return std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  }
  /// Trains tasks 0..last with `strategy` on a fresh model and returns the model.
  std::shared_ptr<Classifier> train(Strategy& strategy, int last) {
    auto m = model();
    Trainer trainer(spec, *stream, m, strategy, test::model_factory(spec, *stream));
    for (int t = 0; t <= last; ++t) trainer.train_task(t);
    return m;
  }
  std::shared_ptr<Strategy> strategy() { return spec.strategy.build(spec.seed); }
};

std::map<std::string, torch::Tensor> backbone_of(Model& m) {
  std::map<std::string, torch::Tensor> out;
  for (auto& item : m.named_parameters())
    if (item.key().rfind("backbone.", 0) == 0) out[item.key()] = item.value().detach().clone();
  return out;
}

/// Features and labels of task `task`'s training data, as the strategy's head pass sees them.
std::pair<torch::Tensor, torch::Tensor> train_features(Model& m, const Stream& s, int task) {
  torch::NoGradGuard no_grad;
  m.eval();
  std::vector<torch::Tensor> f, y;
  for_each_train_batch(s, task, 1000, 0, [&](const Batch& b) {
    f.push_back(m.features(b));
    y.push_back(b.targets);
  });
  m.train();
  return {torch::cat(f), torch::cat(y)};
}

Batch test_batch(const Stream& s, int task) {
  Batch b;
  const Task& t = s.tasks.at(task);
  b.index = t.test_rows;
  b.inputs = s.inputs(s.test, b.index, t);
  b.targets = s.test.labels.index_select(0, b.index);
  b.task_ids = torch::full_like(b.index, task);
  return b;
}

/// Removes wall-clock figures (they differ between two identical runs).
nlohmann::json without_seconds(nlohmann::json j) {
  if (j.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto& [k, v] : j.items())
      if (k.find("seconds") == std::string::npos) out[k] = without_seconds(v);
    return out;
  }
  if (j.is_array())
    for (auto& v : j) v = without_seconds(v);
  return j;
}

}  // namespace

TEST_CASE("sotu with keep 1 and one task equals plain fine-tuning", "[strategies][sotu]") {
  SotuRig rig("{name: sotu, keep: 1, head: linear}");
  Strategy plain;
  auto sotu = rig.strategy();
  auto a = rig.train(plain, 0), b = rig.train(*sotu, 0);
  auto pb = b->named_parameters();
  for (auto& item : a->named_parameters()) {
    INFO(item.key());
    CHECK(torch::allclose(item.value(), pb[item.key()], 0, 1e-6));
  }
  // The linear head evaluates exactly as the model's own forward.
  Batch batch = test_batch(*rig.stream, 0);
  EvalContext ctx{0, 0, *b, *rig.stream};
  torch::NoGradGuard no_grad;
  CHECK(sotu->eval_forward(ctx, batch).equal(b->forward(batch)));
}

TEST_CASE("sotu merges exactly the masked entries of the task's delta", "[strategies][sotu]") {
  for (bool rescale : {false, true}) {
    INFO("rescale " << rescale);
    const std::string opts = std::string("{name: sotu, head: linear, keep: 0.3, rescale: ") + (rescale ? "true" : "false") + "}";
    SotuRig full("{name: sotu, keep: 1, head: linear}"), sparse(opts);
    auto s_full = full.strategy(), s_sparse = sparse.strategy();
    // Training starts from the anchor either way, so theta_1 is the same in both runs.
    auto theta0 = backbone_of(*full.model());
    auto theta1 = backbone_of(*full.train(*s_full, 0));
    auto merged = backbone_of(*sparse.train(*s_sparse, 0));
    int64_t kept = 0, moved = 0, total = 0;
    for (auto& [name, t0] : theta0) {
      INFO(name);
      torch::Tensor delta = theta1[name] - t0, got = merged[name] - t0;
      torch::Tensor changed = delta.ne(0);
      torch::Tensor at_anchor = got.abs().le(1e-7);
      torch::Tensor expected = rescale ? delta / 0.3 : delta;
      torch::Tensor at_delta = (got - expected).abs().le(1e-5 * (1 + expected.abs()));
      CHECK((at_anchor | at_delta).all().item<bool>());  // every entry: theta_0 or theta_0 + delta
      kept += (at_delta & changed).sum().item<int64_t>();
      moved += changed.sum().item<int64_t>();
      total += t0.numel();
    }
    CHECK(moved > total / 2);
    CHECK(static_cast<double>(kept) / moved == Approx(0.3).margin(0.03));
    nlohmann::json info = s_sparse->describe()["tasks"][0];
    CHECK(info["kept_fraction"].get<double>() == Approx(0.3).margin(0.03));
    CHECK(info["keep"] == 0.3);
  }
}

TEST_CASE("sotu's masks: reproducible from the seed, independent across tasks, collisions near keep^2", "[strategies][sotu]") {
  const std::string opts = "{name: sotu, head: linear, keep: 0.3, keep_task_deltas: true}";
  SotuRig a(opts), b(opts), c(opts, {parse_override("seed=4")});
  auto sa = a.strategy(), sb = b.strategy(), sc = c.strategy();
  auto ma = backbone_of(*a.train(*sa, 2)), mb = backbone_of(*b.train(*sb, 2)), mc = backbone_of(*c.train(*sc, 2));
  for (auto& [name, t] : ma) CHECK(t.equal(mb[name]));
  bool differs = false;
  for (auto& [name, t] : ma) differs = differs || !t.equal(mc[name]);
  CHECK(differs);
  CHECK(without_seconds(sa->describe()) == without_seconds(sb->describe()));

  nlohmann::json tasks = sa->describe()["tasks"];
  REQUIRE(tasks.size() == 3);
  CHECK(tasks[0]["collision"]["pairwise"].empty());
  nlohmann::json last = tasks[2];
  REQUIRE(last["collision"]["pairwise"].size() == 2);
  CHECK(last["collision"]["expected_pairwise"].get<double>() == Approx(0.09));
  for (auto& p : last["collision"]["pairwise"]) CHECK(p["rate"].get<double>() == Approx(0.09).margin(0.015));
  // kept by two or more of three tasks: 3 k^2 (1 - k) + k^3 = 0.216
  CHECK(last["collision"]["expected_kept_by_several"].get<double>() == Approx(0.216));
  CHECK(last["collision"]["kept_by_several"].get<double>() == Approx(0.216).margin(0.02));
  REQUIRE(last["cosine"].size() == 2);
  for (auto& p : last["cosine"]) CHECK(std::abs(p["value"].get<double>()) < 0.9);
  CHECK(last["cosine_to_merged"].is_number());
}

TEST_CASE("sotu's ridge head is the closed form on the merged backbone's features", "[strategies][sotu]") {
  SotuRig rig("{name: sotu, keep: 0.5, head: ridge, ridge_lambda: 0.1, solve_dtype: float64}");
  auto sotu = rig.strategy();
  auto m = rig.train(*sotu, 1);
  const int64_t C = rig.stream->num_classes;
  torch::Tensor G = torch::zeros({32, 32}, torch::kFloat64), Q = torch::zeros({32, C}, torch::kFloat64);
  // Accumulated statistics: task 0's were taken with the backbone merged after task 0, so
  // recompute them from a model that stopped there.
  SotuRig rig0("{name: sotu, keep: 0.5, head: ridge, ridge_lambda: 0.1, solve_dtype: float64}");
  auto s0 = rig0.strategy();
  auto m0 = rig0.train(*s0, 0);
  for (auto [model, task] : {std::pair<Model*, int>{m0.get(), 0}, {m.get(), 1}}) {
    auto [f, y] = train_features(*model, *rig.stream, task);
    torch::Tensor h = f.to(torch::kFloat64), targets = torch::one_hot(y, C).to(torch::kFloat64);
    G += h.t().mm(h);
    Q += h.t().mm(targets);
  }
  torch::Tensor W = torch::linalg::solve(G + 0.1 * torch::eye(32, torch::kFloat64), Q, true);
  Batch batch = test_batch(*rig.stream, 1);
  torch::NoGradGuard no_grad;
  m->eval();
  torch::Tensor expected = m->features(batch).to(torch::kFloat64).mm(W);
  torch::Tensor got = sotu->eval_forward(EvalContext{1, 1, *m, *rig.stream}, batch).to(torch::kFloat64);
  torch::Tensor seen = torch::tensor(rig.stream->classes_of(0, 1), torch::kInt64);
  CHECK(torch::allclose(got.index_select(1, seen), expected.index_select(1, seen), 1e-4, 1e-4));
  // classes without statistics are ruled out
  CHECK(got.index({0, rig.stream->tasks[2].classes[0]}).item<double>() < -1e29);
}

TEST_CASE("sotu's lambda search scores the RanPAC grid on a held-out fifth", "[strategies][sotu]") {
  SotuRig rig("{name: ranpac, ranpac_dim: 64}");
  auto s = rig.strategy();
  rig.train(*s, 0);
  nlohmann::json head = s->describe()["tasks"][0]["head"];
  REQUIRE(head["validation_mse"].size() == 17);
  const double lambda = head["lambda"];
  const double e = std::log10(lambda);
  CHECK(e == Approx(std::round(e)));
  CHECK(e >= -8);
  CHECK(e <= 8);
  double best = INFINITY;
  for (auto& l : head["validation_mse"])
    if (l.is_number()) best = std::min(best, l.get<double>());
  CHECK(head["validation_mse"][static_cast<int>(std::round(e)) + 8].get<double>() == best);
}

TEST_CASE("sotu's prototype head: cosine to class means, exact on the tiny separable data", "[strategies][sotu]") {
  SotuRig rig("{name: sotu, tune: [], head: prototype}");
  auto s = rig.strategy();
  auto m = rig.train(*s, 0);
  auto [f, y] = train_features(*m, *rig.stream, 0);
  Batch batch = test_batch(*rig.stream, 0);
  torch::NoGradGuard no_grad;
  m->eval();
  torch::Tensor got = s->eval_forward(EvalContext{0, 0, *m, *rig.stream}, batch);
  torch::Tensor feats = torch::nn::functional::normalize(m->features(batch), torch::nn::functional::NormalizeFuncOptions().dim(1));
  for (int64_t c : rig.stream->tasks[0].classes) {
    torch::Tensor mean = f.index_select(0, y.eq(c).nonzero().view(-1)).mean(0);
    torch::Tensor cos = feats.mv(mean / mean.norm());
    CHECK(torch::allclose(got.select(1, c), cos, 1e-5, 1e-5));
  }
  CHECK(got.argmax(1).eq(batch.targets).all().item<bool>());
}

TEST_CASE("ranpac keeps the backbone frozen and trains nothing after the anchor", "[strategies][sotu]") {
  SotuRig rig("{name: ranpac, ranpac_dim: 128, ridge_lambda: 1}");
  auto s = rig.strategy();
  auto theta0 = backbone_of(*rig.model());
  auto m = rig.train(*s, 2);
  for (auto& [name, t] : backbone_of(*m)) CHECK(t.equal(theta0[name]));
  CHECK(s->hook_count(Hook::before_forward) == 0);
  // Each task's classes become predictable as they arrive.
  for (int task = 0; task < 3; ++task) {
    Batch batch = test_batch(*rig.stream, task);
    torch::NoGradGuard no_grad;
    torch::Tensor pred = s->eval_forward(EvalContext{2, task, *m, *rig.stream}, batch).argmax(1);
    CHECK(pred.eq(batch.targets).to(torch::kFloat32).mean().item<double>() > 0.8);
  }
}

TEST_CASE("sotu with a base-session anchor trains the first task in full and masks the rest", "[strategies][sotu]") {
  SotuRig rig("{name: sotu, anchor: after_first_task, keep: 0.2, head: linear}");
  Strategy plain;
  auto s = rig.strategy();
  auto a = rig.train(plain, 0), b = rig.train(*s, 0);
  auto pa = a->named_parameters();
  for (auto& item : b->named_parameters()) CHECK(item.value().equal(pa[item.key()]));
  nlohmann::json first = s->describe()["tasks"][0];
  CHECK(first["anchor"] == true);
  CHECK_FALSE(first.contains("kept_fraction"));
}

TEST_CASE("sotu resumes after any task exactly", "[strategies][sotu][resume]") {
  SotuRig rig("{name: sotu, keep: 0.3, head: ranpac, ranpac_dim: 64, keep_task_deltas: true}");
  for (int stop_task : {1, 2}) {
    auto [expected, resumed] = test::run_interrupted_and_resumed(rig.spec, rig.dir / std::to_string(stop_task), stop_task, 2);
    CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
    CHECK(resumed["strategy_hooks"]["calls"] == expected["strategy_hooks"]["calls"]);
    CHECK(without_seconds(resumed["strategy_state"]) == without_seconds(expected["strategy_state"]));
  }
}

TEST_CASE("sotu's options are checked", "[strategies][sotu]") {
  test::TempDir dir("sotu_opts");
  auto parse = [&](const std::string& strategy) {
    return parse_spec(test::tiny_config(dir.path()), "tiny.yaml", {parse_override("strategy=" + strategy)});
  };
  CHECK_THROWS_WITH(parse("{name: sotu, keep: 0}"), Catch::Contains("strategy.keep"));
  CHECK_THROWS_WITH(parse("{name: sotu, head: knn}"), Catch::Contains("strategy.head"));
  CHECK_THROWS_WITH(parse("{name: ranpac, keep: 0.1}"), Catch::Contains("keep"));
  CHECK_NOTHROW(parse("{name: sotu, tune: ['blocks.*'], mask_scope: weights_only, anchor: after_first_task}"));
}

TEST_CASE("ranpac resumes mid-run with identical numbers", "[strategies][sotu][resume]") {
  // The base session is the only task that trains: interrupt it, then resume the whole run.
  SotuRig rig("{name: ranpac, anchor: after_first_task, ranpac_dim: 64}");
  auto [expected, resumed] = test::run_interrupted_and_resumed(rig.spec, rig.dir / "ranpac", 0, 2);
  CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
  CHECK(resumed["strategy_hooks"]["calls"] == expected["strategy_hooks"]["calls"]);
  CHECK(without_seconds(resumed["strategy_state"]) == without_seconds(expected["strategy_state"]));
}
