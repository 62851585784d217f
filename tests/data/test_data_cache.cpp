// data/data_cache: inflated IDX files cached by path, size and mtime; stale, corrupt and
// unwritable caches never change what is read.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "clrun/data/data_cache.hpp"
#include "clrun/io/atomic.hpp"
#include "support.hpp"

using namespace clrun;
namespace fs = std::filesystem;

namespace {
torch::Tensor sample_images(int64_t n, int seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 256, {n, 5, 7}, torch::kInt64).to(torch::kUInt8);
}

/// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};
}  // namespace

TEST_CASE("data cache: miss writes an entry, then hits with the same tensor", "[data][cache]") {
  test::TempDir dir("data_cache");
  const std::string src = dir / "train-images-idx3-ubyte.gz", cache = dir / "cache";
  torch::Tensor x = sample_images(30, 1);
  write_idx(src, x);
  CacheOutcome outcome;
  torch::Tensor a = read_idx_cached(src, cache, &outcome);
  CHECK(outcome == CacheOutcome::miss);
  CHECK(torch::equal(a, x));
  CHECK(fs::is_regular_file(data_cache_entry(src, cache)));
  torch::Tensor b = read_idx_cached(src, cache, &outcome);
  CHECK(outcome == CacheOutcome::hit);
  CHECK(torch::equal(b, x));
  // no temp files left behind
  int files = 0;
  for (const auto& e : fs::directory_iterator(cache)) {
    files += 1;
    CHECK_FALSE(is_temp_file_name(e.path().filename().string()));
  }
  CHECK(files == 1);
}

TEST_CASE("data cache: a changed source (size or mtime) makes the entry stale, it is rewritten", "[data][cache]") {
  test::TempDir dir("data_cache");
  const std::string src = dir / "x.gz", cache = dir / "cache";
  write_idx(src, sample_images(30, 1));
  CacheOutcome outcome;
  read_idx_cached(src, cache, &outcome);
  REQUIRE(outcome == CacheOutcome::miss);
  // Same size, other bytes, other mtime.
  torch::Tensor y = sample_images(30, 2);
  write_idx(src, y);
  fs::last_write_time(src, fs::last_write_time(src) + std::chrono::seconds(5));
  CHECK(torch::equal(read_idx_cached(src, cache, &outcome), y));
  CHECK(outcome == CacheOutcome::stale);
  CHECK(torch::equal(read_idx_cached(src, cache, &outcome), y));
  CHECK(outcome == CacheOutcome::hit);
  // Another size.
  torch::Tensor z = sample_images(31, 3);
  write_idx(src, z);
  CHECK(torch::equal(read_idx_cached(src, cache, &outcome), z));
  CHECK(outcome == CacheOutcome::stale);
}

TEST_CASE("data cache: corrupt or truncated entries are ignored and rewritten", "[data][cache]") {
  test::TempDir dir("data_cache");
  const std::string src = dir / "x.gz", cache = dir / "cache";
  torch::Tensor x = sample_images(30, 1);
  write_idx(src, x);
  read_idx_cached(src, cache);
  const std::string entry = data_cache_entry(src, cache);
  const std::string good = read_file(entry);
  CacheOutcome outcome;
  SECTION("one payload byte flipped") {
    std::string bad = good;
    bad[bad.size() - 10] ^= 0x5a;
    write_file_atomic(entry, bad);
  }
  SECTION("truncated") { write_file_atomic(entry, good.substr(0, good.size() / 2)); }
  SECTION("garbage") { write_file_atomic(entry, "not a cache entry"); }
  SECTION("empty") { write_file_atomic(entry, ""); }
  CHECK(torch::equal(read_idx_cached(src, cache, &outcome), x));
  CHECK(outcome == CacheOutcome::corrupt);
  CHECK(read_file(entry) == good);  // rewritten
  CHECK(torch::equal(read_idx_cached(src, cache, &outcome), x));
  CHECK(outcome == CacheOutcome::hit);
}

TEST_CASE("data cache: an unwritable cache directory only logs", "[data][cache]") {
  test::TempDir dir("data_cache");
  const std::string src = dir / "x.gz";
  torch::Tensor x = sample_images(30, 1);
  write_idx(src, x);
  write_file_atomic(dir / "a_file", "x");
  const std::string cache = dir / "a_file/cache";  // below a regular file: cannot be created
  CacheOutcome outcome;
  CHECK(torch::equal(read_idx_cached(src, cache, &outcome), x));
  CHECK(outcome == CacheOutcome::miss);
  CHECK(torch::equal(read_idx_cached(src, cache, &outcome), x));
  CHECK(outcome == CacheOutcome::miss);
}

TEST_CASE("data cache: plain files and an empty cache dir bypass it, source errors are unchanged", "[data][cache]") {
  test::TempDir dir("data_cache");
  torch::Tensor x = sample_images(30, 1);
  write_idx(dir / "plain", x);
  write_idx(dir / "x.gz", x);
  CacheOutcome outcome;
  CHECK(torch::equal(read_idx_cached(dir / "plain", dir / "cache", &outcome), x));
  CHECK(outcome == CacheOutcome::disabled);
  CHECK(torch::equal(read_idx_cached(dir / "x.gz", "", &outcome), x));
  CHECK(outcome == CacheOutcome::disabled);
  CHECK_FALSE(fs::exists(dir / "cache"));
  // A corrupt source is the same error as without the cache, and nothing is cached.
  std::string gz = read_file(dir / "x.gz");
  write_file_atomic(dir / "bad.gz", gz.substr(0, gz.size() / 2));
  CHECK_THROWS_WITH(read_idx_cached(dir / "bad.gz", dir / "cache"), Catch::Contains("truncated gzip data"));
  CHECK_FALSE(fs::exists(data_cache_entry(dir / "bad.gz", dir / "cache")));
}

TEST_CASE("data cache directory from the environment", "[data][cache]") {
  ScopedEnv dir("CLRUN_DATA_CACHE_DIR", nullptr);
  {
    ScopedEnv off("CLRUN_DATA_CACHE", "off");
    CHECK(data_cache_dir().empty());
  }
  ScopedEnv on("CLRUN_DATA_CACHE", nullptr);
  {
    ScopedEnv xdg("XDG_CACHE_HOME", "/some/cache");
    CHECK(data_cache_dir() == "/some/cache/clrun/data");
  }
  {
    ScopedEnv xdg("XDG_CACHE_HOME", nullptr);
    ScopedEnv home("HOME", "/home/u");
    CHECK(data_cache_dir() == "/home/u/.cache/clrun/data");
  }
  ScopedEnv explicit_dir("CLRUN_DATA_CACHE_DIR", "/elsewhere");
  CHECK(data_cache_dir() == "/elsewhere");
}
