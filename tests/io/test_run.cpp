// io/ and the run as a whole: atomic writes, the run directory, metrics.json, resume after an
// interruption giving the same numbers as an uninterrupted run.
#include <catch2/catch.hpp>

#include <spdlog/spdlog.h>

#include "clrun/core/interrupt.hpp"
#include "clrun/io/atomic.hpp"
#include "clrun/io/run_dir.hpp"
#include "clrun/train/experiment.hpp"
#include "support.hpp"

using namespace clrun;

TEST_CASE("atomic writes replace files whole and leave no temp files", "[io]") {
  test::TempDir dir("atomic");
  write_file_atomic(dir / "a.txt", "one");
  write_file_atomic(dir / "a.txt", "two");
  CHECK(read_file(dir / "a.txt") == "two");
  CHECK_THROWS(write_atomic_with(dir / "b.txt", [](const std::string& tmp) {
    write_file_atomic(tmp, "partial");
    throw std::runtime_error("failed midway");
  }));
  CHECK_FALSE(std::filesystem::exists(dir / "b.txt"));
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  CHECK(files == 1);
}

TEST_CASE("run directory checkpoints: latest pointer and keep-last pruning", "[io]") {
  test::TempDir dir("rundir");
  RunDir run(dir / "r");
  run.create();
  CHECK_FALSE(run.latest_checkpoint());
  for (int t = 0; t < 3; ++t) {
    write_file_atomic(run.checkpoint_path(t), "x");
    run.set_latest_checkpoint(t, /*keep_only_latest=*/t == 2);
  }
  CHECK(run.latest_checkpoint() == 2);
  CHECK(std::filesystem::exists(run.checkpoint_path(0)));
  CHECK_FALSE(std::filesystem::exists(run.checkpoint_path(1)));
}

namespace {
ExperimentSpec tiny_spec(const std::string& data, const std::vector<Override>& overrides = {}) {
  return parse_spec(test::tiny_config(data), "tiny.yaml", overrides);
}
}  // namespace

TEST_CASE("a run writes its directory and metrics", "[io][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("run");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path(), {parse_override("output.dir=" + dir.path() + "/runs")});
  RunResult r = run_experiment(spec, {});
  CHECK(r.run_dir == default_run_dir(spec));
  for (const char* f : {"config.yaml", "config.json", "metrics.json", "log.txt", "checkpoints/task_002.pt"}) {
    INFO(f);
    CHECK(std::filesystem::exists(r.run_dir + "/" + f));
  }
  const nlohmann::json& m = r.metrics;
  CHECK(m["status"] == "complete");
  CHECK(m["class_order"].size() == 10);
  CHECK(m["accuracy"]["random_init"].size() == 3);
  CHECK(m["task_aware_accuracy"]["matrix"].size() == 3);
  for (const char* key : {"final_average_accuracy", "final_accuracy_samplewise", "average_incremental_accuracy", "forgetting",
                          "bwt", "fwt"}) {
    INFO(key);
    CHECK(m["metrics"].contains(key));
  }
  CHECK(m["metrics"]["final_average_accuracy"].get<double>() > 20.0);  // the tiny task is learnable
  // class-IL: after task 0, task 1 is scored over classes 0..3 and the model has never seen 2, 3
  CHECK(m["accuracy"]["matrix"][0][1].get<double>() < 50.0);
  CHECK(m["timing"]["train_samples_per_second"].get<double>() > 0);
  CHECK(m["environment"]["versions"].contains("libtorch"));
  CHECK(m["config"] == spec.resolved());
  // the resolved config reproduces the spec
  CHECK(load_spec(r.run_dir + "/config.yaml").resolved() == spec.resolved());
  // the directory is not silently reused
  CHECK_THROWS_WITH(run_experiment(spec, {}), Catch::Contains("already holds a run") && Catch::Contains("--resume"));
  RunOptions overwrite;
  overwrite.overwrite = true;
  CHECK(run_experiment(spec, overwrite).metrics["accuracy"]["correct"] == m["accuracy"]["correct"]);
  // --overwrite never deletes a directory that is not a run directory
  std::filesystem::create_directories(dir / "precious");
  write_file_atomic(dir / "precious/notes.txt", "keep me");
  overwrite.out_dir = dir / "precious";
  CHECK_THROWS_WITH(run_experiment(spec, overwrite), Catch::Contains("not a clrun run directory"));
  CHECK(std::filesystem::exists(dir / "precious/notes.txt"));
}

TEST_CASE("resume after Ctrl-C gives the same final metrics as an uninterrupted run", "[io][run][resume]") {
  spdlog::set_level(spdlog::level::err);  // the interruption's warning is expected here
  test::TempDir dir("resume");
  test::write_tiny_mnist(dir.path());
  for (const std::string reset : {"every_task", "never"}) {
    INFO(reset);
    ExperimentSpec spec = tiny_spec(dir.path(), {parse_override("train.reset_optimizer=" + reset),
                                                 parse_override("backbone.dropout=0.2")});
    RunOptions straight;
    straight.out_dir = dir / ("straight_" + reset);
    nlohmann::json expected = run_experiment(spec, straight).metrics;

    RunOptions first;
    first.out_dir = dir / ("resumed_" + reset);
    first.on_step = [](int task, int64_t step) {
      if (task == 1 && step == 3) request_interrupt();  // as Ctrl-C would, mid-task
    };
    CHECK_THROWS_AS(run_experiment(spec, first), Interrupted);
    clear_interrupt();
    auto partial = RunDir(first.out_dir).read_json("metrics.json");
    REQUIRE(partial);
    CHECK((*partial)["status"] == "interrupted");
    CHECK((*partial)["tasks_completed"] == 1);

    RunOptions again;
    again.out_dir = first.out_dir;
    again.resume = true;
    nlohmann::json resumed = run_experiment(spec, again).metrics;
    CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
    CHECK(resumed["task_aware_accuracy"]["correct"] == expected["task_aware_accuracy"]["correct"]);
    CHECK(resumed["accuracy"]["random_init"] == expected["accuracy"]["random_init"]);
    CHECK(resumed["metrics"] == expected["metrics"]);
    CHECK(resumed["per_task"][2]["mean_loss"] == expected["per_task"][2]["mean_loss"]);
  }
}

TEST_CASE("resume refuses a changed config", "[io][run][resume]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("resume_cfg");
  test::write_tiny_mnist(dir.path());
  RunOptions options;
  options.out_dir = dir / "run";
  run_experiment(tiny_spec(dir.path(), {parse_override("train.epochs=1")}), options);
  options.resume = true;
  CHECK_THROWS_WITH(run_experiment(tiny_spec(dir.path(), {parse_override("train.optimizer.lr=0.2")}), options),
                    Catch::Contains("train.optimizer.lr: 0.05 -> 0.2") && Catch::Contains("train.epochs: 1 -> 2"));
}

TEST_CASE("a diverging run stops with status diverged, keeps what it wrote and exits 1", "[io][run][diverged]") {
  spdlog::set_level(spdlog::level::off);
  test::TempDir dir("diverged");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path(), {parse_override("train.optimizer={name: sgd, lr: 1.0e+30}")});
  RunOptions options;
  options.out_dir = dir / "run";
  CHECK_THROWS_AS(run_experiment(spec, options), Diverged);
  std::optional<nlohmann::json> m = RunDir(options.out_dir).read_json("metrics.json");
  REQUIRE(m);
  CHECK((*m)["status"] == "diverged");
  CHECK((*m)["diverged_at"]["task"] == 0);
  CHECK((*m)["diverged_at"]["epoch"] == 0);
  CHECK(std::filesystem::exists(dir / "run/config.json"));
  spdlog::set_level(spdlog::level::info);
}

namespace {
/// Names of the files under `dir`/checkpoints, sorted.
std::vector<std::string> checkpoint_files(const std::string& run_dir) {
  std::vector<std::string> out;
  if (!std::filesystem::exists(run_dir + "/checkpoints")) return out;
  for (const auto& e : std::filesystem::directory_iterator(run_dir + "/checkpoints")) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

TEST_CASE("checkpoints: every_task keeps all, last keeps only the newest, none writes none", "[io][run][checkpoints]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("checkpoints");
  test::write_tiny_mnist(dir.path());
  auto run = [&](const std::string& mode) {
    ExperimentSpec spec = tiny_spec(dir.path(), {parse_override("output.checkpoints=" + mode), parse_override("train.epochs=1")});
    RunOptions options;
    options.out_dir = dir / mode;
    RunResult r = run_experiment(spec, options);
    CHECK(r.metrics["status"] == "complete");
    return r.run_dir;
  };
  SECTION("every_task") {
    std::string run_dir = run("every_task");
    CHECK(checkpoint_files(run_dir) == std::vector<std::string>{"latest", "task_000.pt", "task_001.pt", "task_002.pt"});
    CHECK(RunDir(run_dir).latest_checkpoint() == 2);
  }
  SECTION("last") {
    std::string run_dir = run("last");
    CHECK(checkpoint_files(run_dir) == std::vector<std::string>{"latest", "task_002.pt"});
    CHECK(RunDir(run_dir).latest_checkpoint() == 2);
  }
  SECTION("none") {
    std::string run_dir = run("none");
    for (const std::string& f : checkpoint_files(run_dir)) {
      INFO(f);
      CHECK(f.find(".pt") == std::string::npos);
    }
    CHECK_FALSE(RunDir(run_dir).latest_checkpoint());
    CHECK(std::filesystem::exists(run_dir + "/metrics.json"));
  }
}

TEST_CASE("checkpoints: last still resumes an interrupted run to the same numbers", "[io][run][checkpoints][resume]") {
  spdlog::set_level(spdlog::level::err);
  test::TempDir dir("checkpoints_last_resume");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path(), {parse_override("output.checkpoints=last")});
  auto [expected, resumed] = test::run_interrupted_and_resumed(spec, dir.path(), 2, 1);
  CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
  CHECK(resumed["per_task"][2]["mean_loss"] == expected["per_task"][2]["mean_loss"]);
  CHECK(checkpoint_files(dir / "resumed") == std::vector<std::string>{"latest", "task_002.pt"});
}

TEST_CASE("resuming a complete run retrains nothing and keeps its numbers", "[io][run][resume]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("resume_complete");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path(), {parse_override("train.epochs=1")});
  RunOptions options;
  options.out_dir = dir / "run";
  nlohmann::json first = run_experiment(spec, options).metrics;
  const auto stamp = std::filesystem::last_write_time(dir / "run/checkpoints/task_002.pt");

  options.resume = true;
  int64_t steps = 0;
  options.on_step = [&steps](int, int64_t) { ++steps; };
  nlohmann::json again = run_experiment(spec, options).metrics;
  CHECK(steps == 0);
  CHECK(again["status"] == "complete");
  CHECK(again["tasks_completed"] == 3);
  CHECK(again["accuracy"] == first["accuracy"]);
  CHECK(again["task_aware_accuracy"] == first["task_aware_accuracy"]);
  CHECK(again["metrics"] == first["metrics"]);
  CHECK(again["per_task"] == first["per_task"]);
  CHECK(again["strategy_hooks"]["calls"] == first["strategy_hooks"]["calls"]);
  CHECK(again["timing"]["train_seconds"] == first["timing"]["train_seconds"]);
  CHECK(std::filesystem::last_write_time(dir / "run/checkpoints/task_002.pt") == stamp);
  CHECK(RunDir(options.out_dir).read_json("metrics.json")->at("accuracy") == first["accuracy"]);
}

TEST_CASE("an interruption during task 0 resumes to the same numbers as an uninterrupted run", "[io][run][resume]") {
  spdlog::set_level(spdlog::level::err);
  test::TempDir dir("resume_task0");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path(), {parse_override("backbone.dropout=0.2")});
  RunOptions straight;
  straight.out_dir = dir / "straight";
  nlohmann::json expected = run_experiment(spec, straight).metrics;

  RunOptions first;
  first.out_dir = dir / "resumed";
  first.on_step = [](int task, int64_t step) {
    if (task == 0 && step == 2) request_interrupt();
  };
  CHECK_THROWS_AS(run_experiment(spec, first), Interrupted);
  clear_interrupt();
  auto partial = RunDir(first.out_dir).read_json("metrics.json");
  REQUIRE(partial);
  CHECK((*partial)["status"] == "interrupted");
  CHECK((*partial)["tasks_completed"] == 0);

  RunOptions again;
  again.out_dir = first.out_dir;
  again.resume = true;
  nlohmann::json resumed = run_experiment(spec, again).metrics;
  CHECK(resumed["status"] == "complete");
  CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
  CHECK(resumed["accuracy"]["random_init"] == expected["accuracy"]["random_init"]);
  CHECK(resumed["task_aware_accuracy"]["correct"] == expected["task_aware_accuracy"]["correct"]);
  CHECK(resumed["metrics"] == expected["metrics"]);
  for (int t = 0; t < 3; ++t) CHECK(resumed["per_task"][t]["mean_loss"] == expected["per_task"][t]["mean_loss"]);
  CHECK(resumed["per_task"][0]["steps"] == expected["per_task"][0]["steps"]);
}

TEST_CASE("the run directory: one per resolved config, the same for the same values", "[io][run][run_dir]") {
  test::TempDir dir("run_dirs");
  auto run_dir = [&](const std::vector<std::string>& sets) {
    std::vector<Override> o;
    for (const auto& s : sets) o.push_back(parse_override(s));
    return default_run_dir(tiny_spec(dir.path(), o));
  };
  const std::string lr1 = run_dir({"train.optimizer.lr=0.1"});
  CHECK(lr1 == run_dir({"train.optimizer.lr=0.1"}));
  CHECK(lr1 == run_dir({"train.optimizer.lr=0.10"}));  // the resolved value, not the text
  CHECK(lr1 != run_dir({"train.optimizer.lr=0.2"}));
  CHECK(lr1 != run_dir({"train.optimizer.lr=0.1", "train.epochs=3"}));
  CHECK(run_dir({}) == run_dir({"train.optimizer.lr=0.05"}));  // 0.05 is tiny_config's own value
  CHECK(run_dir({}) != run_dir({"backbone.hidden=[16]"}));
  CHECK(run_dir({}) != run_dir({"seed=4"}));
  CHECK_THAT(run_dir({"seed=4"}), Catch::Contains("tiny_seed4_"));
  // where the runs go does not change what the run is: same name under another output.dir
  const std::string a = run_dir({"output.dir=" + (dir / "a")}), b = run_dir({"output.dir=" + (dir / "b")});
  CHECK(a == dir / ("a/" + std::filesystem::path(b).filename().string()));
}
