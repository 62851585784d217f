// apps/clrun: the command line as a user meets it: exit codes, single-line errors, subcommands.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "clrun/io/atomic.hpp"
#include "clrun/train/experiment.hpp"
#include "support.hpp"

using namespace clrun;

namespace {
struct Result {
  int code;
  std::string out, err;
};

Result run_cli(const test::TempDir& dir, const std::string& args) {
  std::string cmd = std::string(CLRUN_BINARY) + " " + args + " >" + (dir / "stdout") + " 2>" + (dir / "stderr");
  int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(dir / "stdout"), read_file(dir / "stderr")};
}

/// Starts the binary with `args` in the background (stdout/stderr to files in `dir`).
pid_t start_cli(const test::TempDir& dir, const std::vector<std::string>& args) {
  std::vector<std::string> all = {CLRUN_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out = dir / "bg_stdout", err = dir / "bg_stderr";
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

/// Waits up to `seconds` for `pid`; returns its wait status, or kills it and returns -1.
int wait_for(pid_t pid, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

/// Starts a run of far more steps than a test waits for into `run` (extra args after the
/// config), sends `sig` once it trains, and returns its wait status (-1: it did not end).
int interrupt_run(const test::TempDir& dir, const std::string& config, const std::string& run,
                  const std::vector<std::string>& extra, int sig) {
  std::vector<std::string> args = {config, "--out", run, "--set", "train.iterations=10000000"};
  args.insert(args.end(), extra.begin(), extra.end());
  pid_t pid = start_cli(dir, args);
  if (pid <= 0) return -1;
  // log.txt appears inside the run, after the handler is installed
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(run + "/log.txt") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // into training
  kill(pid, sig);
  return wait_for(pid, 60);
}

/// The run `interrupt_run` stopped exited 130, marked interrupted, and said how to resume it.
void check_interrupted(const test::TempDir& dir, const std::string& run, int status) {
  INFO(read_file(dir / "bg_stderr"));
  REQUIRE(status != -1);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(nlohmann::json::parse(read_file(run + "/metrics.json"))["status"] == "interrupted");
  CHECK_THAT(read_file(dir / "bg_stderr"), Catch::Contains("--resume"));
}
}  // namespace

TEST_CASE("the CLI: exit codes and messages", "[app][cli]") {
  test::TempDir dir("cli");
  test::write_tiny_mnist(dir.path());
  write_file_atomic(dir / "exp.yaml", test::tiny_config(dir.path()));
  const std::string config = dir / "exp.yaml";

  SECTION("validate prints the resolved config on stdout") {
    Result r = run_cli(dir, "validate " + config);
    CHECK(r.code == 0);
    CHECK_THAT(r.out, Catch::Contains("reset_optimizer: \"every_task\""));
    CHECK_THAT(r.err, Catch::Contains("OK"));
  }
  SECTION("bad input exits 2 with one message naming the key") {
    Result r = run_cli(dir, config + " --set train.optimizer.lr=-1");
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("--set train.optimizer.lr: -1.0 is out of range: must be > 0"));
    Result typo = run_cli(dir, "validate " + config + " --set strategy.nmae=x");
    CHECK(typo.code == 2);
    CHECK_THAT(typo.err, Catch::Contains("did you mean 'name'?"));
    CHECK(run_cli(dir, dir / "missing.yaml").code == 2);
    CHECK(run_cli(dir, config + " --bogus-flag").code == 2);
  }
  SECTION("a run exits 0, a second run into the same directory exits 2, --resume 0") {
    const std::string out = " --out " + (dir / "run") + " --set train.epochs=1";
    Result first = run_cli(dir, config + out);
    CHECK(first.code == 0);
    CHECK(first.out.empty());
    CHECK_THAT(first.err, Catch::Contains("final average accuracy"));
    CHECK(run_cli(dir, config + out).code == 2);
    CHECK(run_cli(dir, config + out + " --resume").code == 0);
    Result report = run_cli(dir, "report " + (dir / "run"));  // reads what a real run wrote
    CHECK(report.code == 0);
    CHECK_THAT(report.out, Catch::StartsWith("| run | stream | strategy | n | final_average_accuracy |") &&
                               Catch::Contains("| tiny | split mnist class-il | finetune | 1 |"));
    Result matrix = run_cli(dir, "report --matrix " + (dir / "run"));
    CHECK(matrix.code == 0);
    CHECK_THAT(matrix.out, Catch::Contains("| random init |") && Catch::Contains("task-aware accuracy"));
  }
  SECTION("validate --run-dir prints only the run directory") {
    Result r = run_cli(dir, "validate " + config + " --seed 5 --set train.epochs=1 --run-dir");
    CHECK(r.code == 0);
    ExperimentSpec spec = load_spec(config, {parse_override("train.epochs=1"), {"seed", "5"}});
    CHECK(r.out == default_run_dir(spec) + "\n");
    CHECK_THAT(r.out, Catch::Contains("tiny_seed5_"));
  }
  SECTION("report: Markdown or CSV on stdout, files with --out-dir, exit 2 on bad input") {
    std::filesystem::create_directories(dir / "runs/r0");
    write_file_atomic(dir / "runs/r0/metrics.json",
                      R"({"status": "complete", "config": {"name": "hand", "strategy": {"name": "finetune"}},
                          "metrics": {"final_average_accuracy": 42.5, "average_accuracy_curve": [60, 42.5]}})");
    Result md = run_cli(dir, "report " + (dir / "runs") + " --out-dir " + (dir / "report"));
    CHECK(md.code == 0);
    CHECK_THAT(md.out, Catch::Contains("| hand | ? ? ? | finetune | 1 | 42.50 ± 0.00 |"));
    CHECK(read_file(dir / "report/report.md") == md.out);
    CHECK_THAT(read_file(dir / "report/report.csv"), Catch::Contains("hand,? ? ?,finetune,1,42.50,0.00,1"));
    CHECK_THAT(read_file(dir / "report/accuracy_curve.dat"), Catch::Contains("1 60.00 0.00 1\n2 42.50 0.00 1\n"));
    CHECK(std::filesystem::exists(dir / "report/accuracy_curve.gp"));
    Result csv = run_cli(dir, "report --format csv " + (dir / "runs"));
    CHECK(csv.code == 0);
    CHECK_THAT(csv.out, Catch::StartsWith("run,stream,strategy,n,final_average_accuracy_mean,"));

    write_file_atomic(dir / "runs/r0/metrics.json", "{\"status\": ");
    Result bad = run_cli(dir, "report " + (dir / "runs"));
    CHECK(bad.code == 2);
    CHECK(bad.out.empty());
    CHECK_THAT(bad.err, Catch::Contains(dir / "runs/r0/metrics.json: not valid JSON"));
    CHECK(run_cli(dir, "report " + (dir / "nowhere")).code == 2);
    CHECK(run_cli(dir, "report").code == 2);
  }
  SECTION("list names every kind of component") {
    Result r = run_cli(dir, "list");
    CHECK(r.code == 0);
    for (const char* word : {"split", "permuted", "rotated", "fashion-mnist", "mlp", "cnn", "finetune", "joint",
                             "cumulative", "sgd", "adamw", "cosine"})
      CHECK_THAT(r.out, Catch::Contains(word));
  }
}

TEST_CASE("the CLI: Ctrl-C exits 130 and marks the run interrupted, divergence exits 1", "[app][cli][exit_codes]") {
  test::TempDir dir("cli_exit");
  test::write_tiny_mnist(dir.path());
  write_file_atomic(dir / "exp.yaml", test::tiny_config(dir.path()));
  const std::string config = dir / "exp.yaml";

  SECTION("SIGINT during training: exit 130, status interrupted") {
    const std::string run = dir / "run";
    check_interrupted(dir, run, interrupt_run(dir, config, run, {}, SIGINT));
    CHECK(nlohmann::json::parse(read_file(run + "/metrics.json"))["tasks_completed"] == 0);
  }
  SECTION("a diverging run exits 1 with status diverged") {
    Result r = run_cli(dir, config + " --out " + (dir / "div") + " --set train.optimizer.lr=1.0e+30");
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::Contains("diverged"));
    auto m = nlohmann::json::parse(read_file(dir / "div/metrics.json"));
    CHECK(m["status"] == "diverged");
    CHECK(m["diverged_at"]["task"] == 0);
  }
  SECTION("--set values pick the run directory: one per value, the same for the same value") {
    auto run_dir = [&](const std::string& sets) {
      Result r = run_cli(dir, "validate " + config + " --run-dir " + sets);
      CHECK(r.code == 0);
      return r.out;
    };
    const std::string a = run_dir("--set train.optimizer.lr=0.1"), b = run_dir("--set train.optimizer.lr=0.2");
    CHECK_THAT(a, Catch::StartsWith("results/runs/tiny_seed3_"));
    CHECK(a != b);
    // the same values give the same directory in another process (here: this one)
    CHECK(a == default_run_dir(load_spec(config, {parse_override("train.optimizer.lr=0.1")})) + "\n");
    CHECK(b == default_run_dir(load_spec(config, {parse_override("train.optimizer.lr=0.2")})) + "\n");
    // (the finer rules, over the resolved config, are tested on default_run_dir in tests/io)
  }
}

TEST_CASE("clrun --nproc 2: one process's run, written by rank 0, SIGTERM stops every rank", "[app][cli][distributed]") {
  test::TempDir dir("cli_nproc");
  test::write_tiny_mnist(dir.path());
  write_file_atomic(dir / "exp.yaml", test::tiny_config(dir.path()));  // batch 16 of 40 rows: shards 8/8, 8/8, 4/4
  const std::string config = dir / "exp.yaml";

  SECTION("the same accuracies and losses as one process") {
    Result one = run_cli(dir, config + " --out " + (dir / "one"));
    REQUIRE(one.code == 0);
    Result two = run_cli(dir, config + " --out " + (dir / "two") + " --nproc 2 --set 'strategy={name: migu}'");
    INFO(two.err);
    CHECK(two.code == 0);
    Result two_ft = run_cli(dir, config + " --out " + (dir / "two_ft") + " --nproc 2");
    REQUIRE(two_ft.code == 0);
    CHECK_THAT(two_ft.err, Catch::Contains("data parallel: 2 ranks (gloo, clrun --nproc)"));
    CHECK_THAT(two_ft.err, !Catch::Contains("rank 1"));  // rank 0 alone logs
    auto a = nlohmann::json::parse(read_file(dir / "one/metrics.json"));
    auto b = nlohmann::json::parse(read_file(dir / "two_ft/metrics.json"));
    CHECK(a["accuracy"]["correct"] == b["accuracy"]["correct"]);
    for (std::size_t t = 0; t < 3; ++t)
      CHECK(b["per_task"][t]["mean_loss"].get<double>() == Approx(a["per_task"][t]["mean_loss"].get<double>()).epsilon(1e-4));
    CHECK(b["distributed"]["world_size"] == 2);
    CHECK(b["distributed"]["launcher"] == "clrun --nproc");
    CHECK(b["config"] == a["config"]);  // the world size is how a run ran, not what it is
    CHECK(std::filesystem::exists(dir / "two_ft/checkpoints/task_002.pt"));
  }
  SECTION("SIGTERM to the launcher: every rank stops after the same step, exit 130, resumable") {
    const std::string run = dir / "cut";
    check_interrupted(dir, run, interrupt_run(dir, config, run, {"--nproc", "2"}, SIGTERM));
  }
}
