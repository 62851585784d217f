// apps/clrun: the command line as a user meets it: exit codes, single-line errors, subcommands.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>

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
