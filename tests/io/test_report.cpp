// io/report: reading metrics.json files (and refusing corrupt ones), grouping seeds of one config,
// mean ± std, Markdown and CSV, the gnuplot data, one run's matrices. All on hand-made files.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "clrun/core/error.hpp"
#include "clrun/io/atomic.hpp"
#include "clrun/io/report.hpp"
#include "support.hpp"

using namespace clrun;
using json = nlohmann::json;

namespace {

/// A complete class-IL run as the runner writes it, reduced to what a report reads.
json complete_run(int seed, double lr, double final_accuracy, json forgetting, std::vector<double> curve) {
  return {{"status", "complete"},
          {"seed", seed},
          {"scenario", "class-il"},
          {"config",
           {{"name", "exp"},
            {"seed", seed},
            {"device", "cpu"},
            {"threads", 0},
            {"output", {{"dir", "results/runs"}}},
            {"stream", {{"name", "split"}, {"dataset", {{"name", "mnist"}}}}},
            {"strategy", {{"name", "finetune"}}},
            {"train", {{"optimizer", {{"name", "sgd"}, {"lr", lr}}}}}}},
          {"metrics",
           {{"final_average_accuracy", final_accuracy},
            {"forgetting", forgetting},
            {"bwt", nullptr},
            {"average_accuracy_curve", curve}}},
          {"task_aware_accuracy", {{"metrics", {{"final_average_accuracy", final_accuracy + 30}}}}},
          {"timing", {{"wall_seconds", 2.0 + seed}, {"train_seconds", 1.0}}}};
}

void write_run(const test::TempDir& dir, const std::string& name, const json& metrics) {
  std::filesystem::create_directories(dir / name);
  write_file_atomic(dir / (name + "/metrics.json"), metrics.dump(2));
}

void write_text(const test::TempDir& dir, const std::string& name, const std::string& text) {
  std::filesystem::create_directories(dir / name);
  write_file_atomic(dir / (name + "/metrics.json"), text);
}

/// Two seeds of lr 0.1, one of lr 0.01, and two unfinished runs, under dir/runs.
void write_sweep(const test::TempDir& dir) {
  write_run(dir, "runs/a_seed0", complete_run(0, 0.1, 50, 10, {90, 60, 50}));
  write_run(dir, "runs/a_seed1", complete_run(1, 0.1, 60, nullptr, {80, 70, 60}));
  write_run(dir, "runs/b_seed0", complete_run(0, 0.01, 40, 20, {70, 40}));
  write_run(dir, "runs/c_seed2", {{"status", "running"}, {"tasks_completed", 1}});
  write_run(dir, "runs/nested/d_seed3", {{"status", "interrupted"}});
}

}  // namespace

TEST_CASE("summarize: mean and sample std", "[io][report]") {
  Stat s = summarize({1, 2, 3, 4});
  CHECK(s.n == 4);
  CHECK(s.mean == Approx(2.5));
  CHECK(s.std == Approx(std::sqrt(5.0 / 3.0)));  // ddof = 1
  CHECK(summarize({7}).std == 0);
  CHECK(summarize({}).n == 0);
}

TEST_CASE("report: grouping, statistics, Markdown and CSV", "[io][report]") {
  test::TempDir dir("report");
  write_sweep(dir);
  std::vector<RunRecord> runs = load_runs({dir / "runs"});
  REQUIRE(runs.size() == 5);
  Report report = build_report(runs);

  SECTION("seeds of one config form one group; a different lr forms another, labelled by it") {
    REQUIRE(report.groups.size() == 2);
    const RunGroup& small = report.groups[0];
    const RunGroup& large = report.groups[1];
    CHECK(small.label == "exp (train.optimizer.lr=0.01)");
    CHECK(large.label == "exp (train.optimizer.lr=0.1)");
    CHECK(large.run_dirs == std::vector<std::string>{dir / "runs/a_seed0", dir / "runs/a_seed1"});
    CHECK(large.stream == "split mnist class-il");
    CHECK(large.strategy == "finetune");

    const Stat& acc = large.stats.at("final_average_accuracy");
    CHECK(acc.n == 2);
    CHECK(acc.mean == 55.0);
    CHECK(acc.std == Approx(std::sqrt(50.0)));
    CHECK(large.stats.at("forgetting").n == 1);  // null skipped
    CHECK(large.stats.at("forgetting").mean == 10.0);
    CHECK(large.stats.at("bwt").n == 0);
    CHECK(large.stats.at("task_aware_final_average_accuracy").mean == 85.0);
    CHECK(large.stats.at("wall_seconds").mean == 2.5);
    CHECK(small.stats.at("final_average_accuracy").std == 0.0);  // n = 1
    REQUIRE(large.curve.size() == 3);
    CHECK(large.curve[1].mean == 65.0);
  }
  SECTION("columns: the protocol's metrics first, then task-aware and timing") {
    CHECK(report.columns == std::vector<std::string>{"final_average_accuracy", "forgetting", "bwt",
                                                     "task_aware_final_average_accuracy", "wall_seconds",
                                                     "train_seconds"});
  }
  SECTION("runs that are not complete are left out and listed") {
    REQUIRE(report.not_complete.size() == 2);
    CHECK(report.not_complete[0].status == "running");
    CHECK(report.not_complete[1].dir == dir / "runs/nested/d_seed3");
  }
  SECTION("Markdown") {
    std::string md = report_markdown(report);
    CHECK_THAT(md, Catch::StartsWith("| run | stream | strategy | n | final_average_accuracy | forgetting | bwt | "
                                     "task_aware_final_average_accuracy | wall_seconds | train_seconds |\n"
                                     "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"));
    CHECK_THAT(md, Catch::Contains("| exp (train.optimizer.lr=0.01) | split mnist class-il | finetune | 1 | 40.00 ± 0.00 | "
                                   "20.00 ± 0.00 | n/a | 70.00 ± 0.00 | 2.00 ± 0.00 | 1.00 ± 0.00 |\n"));
    CHECK_THAT(md, Catch::Contains("| exp (train.optimizer.lr=0.1) | split mnist class-il | finetune | 2 | 55.00 ± 7.07 | "
                                   "10.00 ± 0.00 (n=1) | n/a | 85.00 ± 7.07 | 2.50 ± 0.71 | 1.00 ± 0.00 |\n"));
    CHECK_THAT(md, Catch::Contains("sample standard deviation (ddof=1)"));
    CHECK_THAT(md, Catch::Contains("2 run(s) not complete, left out:\n- running: " + (dir / "runs/c_seed2") +
                                   "\n- interrupted: " + (dir / "runs/nested/d_seed3") + "\n"));
  }
  SECTION("CSV") {
    std::string csv = report_csv(report);
    CHECK_THAT(csv, Catch::StartsWith("run,stream,strategy,n,final_average_accuracy_mean,final_average_accuracy_std,"
                                      "final_average_accuracy_n,forgetting_mean,forgetting_std,forgetting_n,bwt_mean,"));
    CHECK_THAT(csv, Catch::Contains("\nexp (train.optimizer.lr=0.1),split mnist class-il,finetune,2,55.00,7.07,2,"
                                    "10.00,0.00,1,,,0,85.00,7.07,2,2.50,0.71,2,1.00,0.00,2\n"));
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
  }
  SECTION("the plot data: one block per group, task mean std n") {
    std::string dat = curve_data(report);
    CHECK_THAT(dat, Catch::EndsWith("# 0: exp (train.optimizer.lr=0.01)\n"
                                    "1 70.00 0.00 1\n"
                                    "2 40.00 0.00 1\n"
                                    "\n\n"
                                    "# 1: exp (train.optimizer.lr=0.1)\n"
                                    "1 85.00 7.07 2\n"
                                    "2 65.00 7.07 2\n"
                                    "3 55.00 7.07 2\n"));
    std::string gp = curve_script(report, dir / "plot/curve");
    CHECK_THAT(gp, Catch::Contains("data = '" + (dir / "plot/curve.dat") + "'"));
    CHECK_THAT(gp, Catch::Contains("data index 1 using 1:2 with linespoints lc 2 lw 2 pt 7 title 'exp (train.optimizer.lr=0.1)'"));
    std::string done = write_curve_plot(report, dir / "plot/curve");
    CHECK(read_file(dir / "plot/curve.dat") == dat);
    CHECK(read_file(dir / "plot/curve.gp") == gp);
    if (done.find(".svg") != std::string::npos) CHECK(std::filesystem::file_size(dir / "plot/curve.svg") > 0);

    const char* path = std::getenv("PATH");
    const std::string saved_path = path ? path : "";
    ::setenv("PATH", (dir / "no-gnuplot-here").c_str(), 1);
    CHECK_THAT(write_curve_plot(report, dir / "plot/other"),
               Catch::Contains("render with `gnuplot " + (dir / "plot/other.gp") + "`"));
    ::setenv("PATH", saved_path.c_str(), 1);
    CHECK_FALSE(std::filesystem::exists(dir / "plot/other.svg"));
  }
}

TEST_CASE("report: one config is labelled by its name, new metrics become columns", "[io][report]") {
  test::TempDir dir("report_single");
  json run = complete_run(0, 0.1, 50, 10, {50});
  run["metrics"]["new_metric"] = 1.5;
  write_run(dir, "r0", run);
  run["config"]["seed"] = 1;
  run["config"]["output"]["dir"] = "elsewhere";
  run["config"]["threads"] = 4;
  write_run(dir, "r1", run);
  Report report = build_report(load_runs({dir / "r0", dir / "r1", dir / "r0/metrics.json", dir.path()}));
  REQUIRE(report.groups.size() == 1);  // the same run reached three ways counts once
  CHECK(report.groups[0].label == "exp");
  CHECK(report.groups[0].run_dirs.size() == 2);
  CHECK(report.columns[3] == "new_metric");
  CHECK(report.groups[0].stats.at("new_metric").mean == 1.5);
}

TEST_CASE("report: groups of one name are labelled by every key that differs", "[io][report]") {
  test::TempDir dir("report_labels");
  json a = complete_run(0, 0.1, 50, 10, {50});
  json b = a, c = a;
  b["config"]["train"]["epochs"] = 2;
  c["config"]["train"]["optimizer"]["lr"] = 0.01;
  c["config"]["strategy"] = {{"name", "finetune"}, {"extra", json::object()}};
  for (auto [name, run] : {std::pair{"a", a}, {"b", b}, {"c", c}}) write_run(dir, name, run);
  std::vector<std::string> labels;
  for (const RunGroup& g : build_report(load_runs({dir.path()})).groups) labels.push_back(g.label);
  CHECK(labels == std::vector<std::string>{"exp (strategy.extra=(unset), train.epochs=(unset), train.optimizer.lr=0.1)",
                                           "exp (strategy.extra=(unset), train.epochs=2, train.optimizer.lr=0.1)",
                                           "exp (strategy.extra={}, train.epochs=(unset), train.optimizer.lr=0.01)"});
}

TEST_CASE("report: unreadable input is an InputError naming the file", "[io][report]") {
  test::TempDir dir("report_bad");
  auto check_rejected = [&](const std::string& text, const std::string& what) {
    write_text(dir, "bad", text);
    INFO(text);
    try {
      read_run(dir / "bad/metrics.json");
      FAIL("accepted");
    } catch (const InputError& e) {
      std::string message = e.what();
      CHECK_THAT(message, Catch::StartsWith(dir / "bad/metrics.json: ") && Catch::Contains(what));
      CHECK(message.find('\n') == std::string::npos);
    }
  };
  json good = complete_run(0, 0.1, 50, 10, {50});
  auto with = [&](const std::string& pointer, const json& value) {
    json j = good;
    j[json::json_pointer(pointer)] = value;
    return j.dump();
  };
  check_rejected("", "not valid JSON");
  check_rejected("{\"status\": \"complete\"", "not valid JSON");
  check_rejected("[1, 2]", "expected a JSON object, got array");
  check_rejected("{}", "missing \"status\"");
  check_rejected("{\"status\": 3}", "status: expected a string, got number");
  check_rejected("{\"status\": \"complete\"}", "missing \"config\"");
  check_rejected(with("/config", "x"), "config: expected an object, got string");
  check_rejected(with("/config/name", nullptr), "config.name: expected a string, got null");
  check_rejected(with("/config/stream", 1), "config.stream: expected an object, got number");
  check_rejected(with("/metrics/final_average_accuracy", "50"), "metrics.final_average_accuracy: expected a number");
  check_rejected(with("/metrics/average_accuracy_curve", json::array({1, "x"})), "average_accuracy_curve: expected a list of numbers");
  check_rejected(with("/timing", json::array()), "timing: expected an object, got array");
  check_rejected(with("/metrics/bad\nkey", true), "metrics.bad key: expected a number");
  check_rejected(std::string(100000, '[') + std::string(100000, ']'), "nested more than");
  CHECK_THROWS_WITH(load_runs({dir / "missing"}), Catch::Contains(dir / "missing") && Catch::Contains("no such file"));
  std::filesystem::create_directories(dir / "empty/sub");
  CHECK_THROWS_WITH(load_runs({dir / "empty"}), Catch::Contains("no run found"));
  // a complete run is checked even in a folder with others
  write_run(dir, "tree/ok", good);
  write_text(dir, "tree/broken", "{\"status\": \"complete\", \"config\": ");
  CHECK_THROWS_WITH(load_runs({dir / "tree"}), Catch::StartsWith(dir / "tree/broken/metrics.json: not valid JSON"));
}

TEST_CASE("report: one run's accuracy matrices", "[io][report]") {
  test::TempDir dir("report_matrix");
  json run = complete_run(0, 0.1, 50, 10, {90, 50});
  run["accuracy"] = {{"matrix", {{90.0, 5.0}, {40.0, 60.0}}}, {"random_init", {10.0, 12.5}}};
  run["task_aware_accuracy"]["matrix"] = {{95.0, 50.0}, {80.0, 90.0}};
  run["task_aware_accuracy"]["random_init"] = nullptr;
  write_run(dir, "r", run);
  std::string md = accuracy_matrices_markdown(dir / "r");
  CHECK_THAT(md, Catch::Contains("accuracy in percent; rows: after training task t, columns: task i\n\n"
                                 "| after task | task 1 | task 2 |\n"
                                 "|---|---:|---:|\n"
                                 "| random init | 10.00 | 12.50 |\n"
                                 "| 1 | 90.00 | 5.00 |\n"
                                 "| 2 | 40.00 | 60.00 |\n"));
  CHECK_THAT(md, Catch::Contains("task-aware accuracy (task-IL scoring) in percent; rows: after training task t, columns: task i\n\n"
                                 "| after task | task 1 | task 2 |\n"
                                 "|---|---:|---:|\n"
                                 "| 1 | 95.00 | 50.00 |\n"));
  run["accuracy"]["matrix"] = {{90.0, "x"}};
  write_run(dir, "r", run);
  CHECK_THROWS_AS(accuracy_matrices_markdown(dir / "r"), InputError);
}
