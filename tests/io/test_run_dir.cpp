// io/run_dir + atomic: the lock, stale temp files, damaged runs, unwritable paths and full disks.
#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "clrun/io/atomic.hpp"
#include "clrun/io/run_dir.hpp"
#include "clrun/train/experiment.hpp"
#include "support.hpp"

using namespace clrun;
namespace fs = std::filesystem;

namespace {
ExperimentSpec tiny_spec(const std::string& data, const std::string& extra = "") {
  return parse_spec(test::tiny_config(data, extra), "tiny.yaml");
}
RunOptions into(const std::string& dir, bool resume = false) {
  RunOptions o;
  o.out_dir = dir;
  o.resume = resume;
  return o;
}
/// Every file under `dir` (relative path -> bytes), to check that a refused run changed nothing.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != ".lock")
      files[fs::relative(e.path(), dir).string()] = read_file(e.path().string());
  return files;
}
}  // namespace

TEST_CASE("temp file names are recognised exactly", "[io]") {
  CHECK(is_temp_file_name("metrics.json.tmp.1234"));
  CHECK(is_temp_file_name("task_001.pt.tmp.7"));
  CHECK_FALSE(is_temp_file_name("metrics.json"));
  CHECK_FALSE(is_temp_file_name("notes.tmp.txt"));
  CHECK_FALSE(is_temp_file_name("x.tmp."));
  CHECK_FALSE(is_temp_file_name(".tmp.12"));
}

TEST_CASE("a failed write keeps the previous file, removes its temp file and names the target", "[io]") {
  test::TempDir dir("writefail");
  write_file_atomic(dir / "m.json", "old");
  set_write_fault([](const std::string& p) { return p.find("m.json") != std::string::npos; });
  try {
    write_file_atomic(dir / "m.json", "new");
    FAIL("the injected fault did not fail the write");
  } catch (const WriteError& e) {
    std::string msg = e.what();
    CHECK(msg.find(dir / "m.json") == 0);
    CHECK(msg.find("No space left on device") != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
  set_write_fault(nullptr);
  CHECK(read_file(dir / "m.json") == "old");
  CHECK(snapshot(dir.path()).size() == 1);
}

TEST_CASE("a checkpoint that hits a real write limit is a WriteError, not an abort in torch's writer", "[io]") {
  // RLIMIT_FSIZE makes the kernel refuse writes past 64 KiB (EFBIG), like a full disk, without root.
  test::TempDir dir("fsize");
  write_file_atomic(dir / "ckpt.pt", "previous");
  pid_t child = ::fork();
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit{64 * 1024, 64 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    torch::serialize::OutputArchive archive;
    archive.write("w", torch::ones({1 << 18}));  // 1 MiB
    try {
      save_archive_atomic(dir / "ckpt.pt", archive);
    } catch (const WriteError& e) {
      std::string msg = e.what();
      ::_exit(msg.find(dir / "ckpt.pt: cannot write (File too large)") == 0 ? 0 : 3);
    }
    ::_exit(4);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));  // not killed by an abort
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(read_file(dir / "ckpt.pt") == "previous");
  CHECK(snapshot(dir.path()).size() == 1);
}

TEST_CASE("the run directory lock excludes a second holder and is taken over when stale", "[io]") {
  test::TempDir dir("lock");
  const std::string path = dir / "run";
  {
    RunDir first(path);
    first.lock();
    CHECK(read_file(path + "/.lock").find("pid " + std::to_string(::getpid())) == 0);
    // flock is per open file description: a second RunDir in this process competes like another process.
    RunDir second(path);
    try {
      second.lock();
      FAIL("a second lock on the same directory succeeded");
    } catch (const InputError& e) {
      CHECK(std::string(e.what()).find("in use by another clrun (pid " + std::to_string(::getpid())) !=
            std::string::npos);
    }
  }
  // A child that takes the lock and dies by SIGKILL leaves the file but not the lock.
  pid_t child = ::fork();
  if (child == 0) {
    RunDir d(path);
    d.lock();
    ::kill(::getpid(), SIGKILL);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  CHECK(read_file(path + "/.lock").find("pid " + std::to_string(child)) == 0);
  RunDir after(path);
  CHECK_NOTHROW(after.lock());
  CHECK(read_file(path + "/.lock").find("pid " + std::to_string(::getpid())) == 0);
}

TEST_CASE("a run refuses a directory another run holds", "[io][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("lockrun");
  test::write_tiny_mnist(dir.path());
  RunDir holder(dir / "r");
  holder.lock();
  CHECK_THROWS_WITH(run_experiment(tiny_spec(dir.path()), into(dir / "r")),
                    Catch::Contains("is in use by another clrun"));
  CHECK_FALSE(fs::exists(dir / "r/metrics.json"));
}

TEST_CASE("an output path that cannot be created is bad input naming the path", "[io][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("outpath");
  test::write_tiny_mnist(dir.path());
  write_file_atomic(dir / "file", "in the way");
  CHECK_THROWS_MATCHES(run_experiment(tiny_spec(dir.path()), into(dir / "file/run")), InputError,
                       Catch::Matchers::Predicate<InputError>([&](const InputError& e) {
                         std::string m = e.what();
                         return m.find(dir / "file/run") == 0 && m.find("cannot create") != std::string::npos;
                       }));
  if (::geteuid() != 0) {  // root ignores permissions
    fs::create_directories(dir / "ro");
    fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    CHECK_THROWS_AS(run_experiment(tiny_spec(dir.path()), into(dir / "ro/run")), InputError);
    fs::permissions(dir / "ro", fs::perms::owner_all);
  }
}

TEST_CASE("a damaged metrics.json is refused, not overwritten", "[io][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("corrupt");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path());
  run_experiment(spec, into(dir / "r"));
  write_file_atomic(dir / "r/metrics.json", "{\"status\": \"comp");
  auto before = snapshot(dir / "r");
  for (bool resume : {false, true}) {
    CHECK_THROWS_WITH(run_experiment(spec, into(dir / "r", resume)),
                      Catch::StartsWith(dir / "r/metrics.json") && Catch::Contains("not valid JSON"));
    CHECK(snapshot(dir / "r") == before);
  }
  // valid JSON, but not what clrun writes (fuzzer findings)
  for (const char* text : {"[1, 2]", "{\"status\": 5}", "{\"status\": \"running\", \"tasks_completed\": -1}"}) {
    INFO(text);
    write_file_atomic(dir / "r/metrics.json", text);
    CHECK_THROWS_WITH(run_experiment(spec, into(dir / "r", true)),
                      Catch::StartsWith(dir / "r/metrics.json: not a clrun metrics file"));
  }
  RunOptions overwrite = into(dir / "r");
  overwrite.overwrite = true;
  CHECK(run_experiment(spec, overwrite).metrics["status"] == "complete");
}

TEST_CASE("resume of a run without checkpoints refuses instead of starting over", "[io][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("nockpt");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path(), "output: {checkpoints: none}\n");
  RunOptions first = into(dir / "r");
  first.on_step = [](int t, int64_t) {
    if (t == 1) request_interrupt();
  };
  CHECK_THROWS_AS(run_experiment(spec, first), Interrupted);
  clear_interrupt();
  auto before = snapshot(dir / "r");
  CHECK_FALSE(fs::exists(dir / "r/checkpoints/latest"));
  CHECK_THROWS_WITH(run_experiment(spec, into(dir / "r", true)),
                    Catch::Contains("1 completed tasks but no checkpoint") && Catch::Contains("checkpoints: none"));
  CHECK(snapshot(dir / "r") == before);
}

TEST_CASE("temp files left by a killed write are removed on the next start", "[io][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("stale");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path());
  RunOptions first = into(dir / "r");
  first.on_step = [](int t, int64_t) {
    if (t == 1) request_interrupt();
  };
  CHECK_THROWS_AS(run_experiment(spec, first), Interrupted);
  clear_interrupt();
  write_file_atomic(dir / "r/metrics.json.tmp.99999", "half");
  write_file_atomic(dir / "r/checkpoints/task_001.pt.tmp.99999", "half");
  write_file_atomic(dir / "r/notes.tmp.txt", "a user's file");
  run_experiment(spec, into(dir / "r", true));
  CHECK_FALSE(fs::exists(dir / "r/metrics.json.tmp.99999"));
  CHECK_FALSE(fs::exists(dir / "r/checkpoints/task_001.pt.tmp.99999"));
  CHECK(fs::exists(dir / "r/notes.tmp.txt"));
}

TEST_CASE("a full disk during a checkpoint keeps the previous checkpoint and metrics, and resume recovers",
          "[io][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("diskfull");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = tiny_spec(dir.path());
  nlohmann::json expected = run_experiment(spec, into(dir / "straight")).metrics;

  set_write_fault([](const std::string& p) { return p.find("task_002.pt") != std::string::npos; });
  try {
    run_experiment(spec, into(dir / "r"));
    set_write_fault(nullptr);
    FAIL("the run did not fail");
  } catch (const WriteError& e) {
    set_write_fault(nullptr);
    CHECK(std::string(e.what()).find(dir / "r/checkpoints/task_002.pt") == 0);
  }
  auto m = RunDir(dir / "r").read_json("metrics.json");
  REQUIRE(m);
  CHECK((*m)["tasks_completed"] == 2);
  CHECK((*m)["status"] == "running");
  CHECK(RunDir(dir / "r").latest_checkpoint() == 1);
  for (const auto& [name, bytes] : snapshot(dir / "r")) CHECK_FALSE(is_temp_file_name(fs::path(name).filename()));

  nlohmann::json resumed = run_experiment(spec, into(dir / "r", true)).metrics;
  CHECK(resumed["accuracy"] == expected["accuracy"]);
  CHECK(resumed["metrics"] == expected["metrics"]);
  CHECK(resumed["status"] == "complete");
}
