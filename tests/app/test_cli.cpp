// apps/clrun: the command line as a user meets it: exit codes, single-line errors, subcommands.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>

#include "clrun/io/atomic.hpp"
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
  }
  SECTION("list names every kind of component") {
    Result r = run_cli(dir, "list");
    CHECK(r.code == 0);
    for (const char* word : {"split", "permuted", "rotated", "fashion-mnist", "mlp", "cnn", "finetune", "joint",
                             "cumulative", "sgd", "adamw", "cosine"})
      CHECK_THAT(r.out, Catch::Contains(word));
  }
}
