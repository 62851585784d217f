// eval.future_tasks: false leaves the tasks not yet trained unscored: null matrix entries, no
// random-init row, fwt null; every other number equals the run that scores them.
#include <catch2/catch.hpp>

#include <cmath>

#include "clrun/eval/metrics.hpp"
#include "clrun/io/report.hpp"
#include "support.hpp"

using namespace clrun;

TEST_CASE("accuracy matrices with unscored entries: null in JSON, fwt undefined, the rest unchanged", "[eval][metrics][future_tasks]") {
  const int64_t N = AccuracyMatrix::kNotEvaluated;
  AccuracyMatrix full({100, 100, 200}), lower({100, 100, 200});
  full.set_random_init({10, 20, 20});
  full.add_row({90, 30, 0});
  full.add_row({60, 80, 40});
  full.add_row({50, 70, 180});
  lower.add_row({90, N, N});
  lower.add_row({60, 80, N});
  lower.add_row({50, 70, 180});
  CHECK_FALSE(lower.evaluated(0, 1));
  CHECK(std::isnan(lower.accuracy(0, 1)));
  Metrics a = compute_metrics(full), b = compute_metrics(lower);
  CHECK(a.fwt);
  CHECK_FALSE(b.fwt);
  CHECK(b.final_average_accuracy == a.final_average_accuracy);
  CHECK(b.final_accuracy_samplewise == a.final_accuracy_samplewise);
  CHECK(b.average_incremental_accuracy == a.average_incremental_accuracy);
  CHECK(b.average_accuracy_curve == a.average_accuracy_curve);
  CHECK(*b.forgetting == *a.forgetting);
  CHECK(*b.bwt == *a.bwt);
  // A random-init row alone does not make fwt defined when R[i-1][i] is missing.
  lower.set_random_init({10, 20, 20});
  CHECK_FALSE(compute_metrics(lower).fwt);

  nlohmann::json j = lower.to_json();
  CHECK(j["matrix"][0][1].is_null());
  CHECK(j["correct"][0][2].is_null());
  CHECK(j["matrix"][1][0] == 60.0);
  AccuracyMatrix back = AccuracyMatrix::from_json(j);
  CHECK(back.to_json() == j);
  CHECK_FALSE(back.evaluated(1, 2));
  CHECK(to_json(b)["fwt"].is_null());
}

TEST_CASE("eval.future_tasks false: a run scores only trained tasks, the rest of its numbers unchanged", "[eval][run][future_tasks]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("future_tasks");
  test::write_tiny_mnist(dir.path());
  auto spec_with = [&](const std::string& future) {
    std::vector<Override> o = {parse_override("output.dir=" + dir.path() + "/runs")};
    if (!future.empty()) o.push_back(parse_override("eval.future_tasks=" + future));
    return parse_spec(test::tiny_config(dir.path()), "tiny.yaml", o);
  };
  ExperimentSpec on = spec_with(""), off = spec_with("false");
  // The default is absent from the resolved config: old configs keep their run directories.
  CHECK_FALSE(on.resolved()["eval"].contains("future_tasks"));
  CHECK(off.resolved()["eval"]["future_tasks"] == false);
  CHECK(default_run_dir(on) == default_run_dir(spec_with("true")));
  CHECK(default_run_dir(on) != default_run_dir(off));

  nlohmann::json a = run_experiment(on, {}).metrics, b = run_experiment(off, {}).metrics;
  const auto& ma = a["accuracy"], &mb = b["accuracy"];
  const int T = 3;
  REQUIRE(mb["matrix"].size() == T);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < T; ++i) {
      INFO("R[" << t << "][" << i << "]");
      if (i > t) CHECK(mb["matrix"][t][i].is_null());
      else CHECK(mb["matrix"][t][i] == ma["matrix"][t][i]);
    }
  CHECK(mb["random_init"].is_null());
  CHECK(b["metrics"]["fwt"].is_null());
  CHECK_FALSE(a["metrics"]["fwt"].is_null());
  for (const char* k : {"final_average_accuracy", "average_incremental_accuracy", "forgetting", "bwt"}) {
    INFO(k);
    CHECK(b["metrics"][k] == a["metrics"][k]);
  }
  CHECK(b["task_aware_accuracy"]["matrix"][0][2].is_null());
  CHECK(b["conventions"]["future_tasks"].get<std::string>().find("fwt is null") != std::string::npos);
  // The report reads such a run: aggregated, and its matrix printed with empty cells.
  const std::string file = b["run_dir"].get<std::string>() + "/metrics.json";
  RunRecord r = read_run(file);
  CHECK_FALSE(r.values.at("fwt"));
  std::string md = accuracy_matrices_markdown(file);
  CHECK(md.find("| 1 |") != std::string::npos);
}

TEST_CASE("eval.batch_size 0 (auto) resolves per backbone, a set value is kept", "[eval][config]") {
  auto resolved_batch = [](const std::string& yaml) { return parse_spec(yaml, "x.yaml", {}).eval.batch_size; };
  CHECK(resolved_batch("backbone: {name: mlp}") == 1000);
  CHECK(resolved_batch("backbone: {name: cnn}") == 128);
  CHECK(resolved_batch("backbone: {name: cnn}\neval: {batch_size: 1000}") == 1000);
  CHECK(resolved_batch("backbone: {name: mlp}\neval: {batch_size: 0}") == 1000);
  // The resolved config shows the value used, so an MLP config without the key keeps its run directory.
  CHECK(parse_spec("backbone: {name: mlp}", "x.yaml", {}).resolved()["eval"]["batch_size"] == 1000);
}
