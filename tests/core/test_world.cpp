// core/world: the launch environment, the collectives on loopback (ranks as threads), and a
// rank that dies or never arrives making the others fail instead of hanging.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "clrun/core/world.hpp"
#include "support.hpp"

using namespace clrun;

namespace {
/// Sets environment variables for its lifetime, restoring the previous values.
class EnvGuard {
 public:
  EnvGuard(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const char* name : kNames) {
      const char* old = std::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      ::unsetenv(name);
    }
    for (const auto& [k, v] : vars) ::setenv(k, v, 1);
  }
  ~EnvGuard() {
    for (const auto& [k, v] : saved_) v ? ::setenv(k, v->c_str(), 1) : ::unsetenv(k);
  }

 private:
  static constexpr const char* kNames[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                           "MASTER_PORT", "CLRUN_LAUNCHER", "CLRUN_DIST_TIMEOUT", "SLURM_STEP_NUM_TASKS",
                                           "SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE", "SLURM_STEP_NUM_NODES"};
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};
}  // namespace

TEST_CASE("the world comes from torchrun's or srun's variables, one process has none", "[core][world]") {
  {
    EnvGuard env({});
    CHECK_FALSE(WorldConfig::from_environment());
  }
  {
    EnvGuard env({{"WORLD_SIZE", "1"}, {"RANK", "0"}});
    CHECK_FALSE(WorldConfig::from_environment());  // torchrun --nproc_per_node 1: a single process
  }
  {
    EnvGuard env({{"WORLD_SIZE", "4"}, {"RANK", "3"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                  {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29600"}, {"CLRUN_DIST_TIMEOUT", "42"}});
    auto c = WorldConfig::from_environment();
    REQUIRE(c);
    CHECK(c->rank == 3);
    CHECK(c->size == 4);
    CHECK(c->local_rank == 1);
    CHECK(c->local_size == 2);
    CHECK(c->master_addr == "node7");
    CHECK(c->master_port == 29600);
    CHECK(c->timeout == std::chrono::seconds(42));
    CHECK(c->launcher == "torchrun");
  }
  {
    // srun -n 4 over 2 nodes, 2 tasks per node ("2(x2)"): MASTER_ADDR is the job script's to set
    EnvGuard env({{"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_PROCID", "2"}, {"SLURM_LOCALID", "0"},
                  {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"}, {"SLURM_STEP_NUM_NODES", "2"}});
    CHECK_THROWS_WITH(WorldConfig::from_environment(), Catch::Contains("set MASTER_ADDR"));
    ::setenv("MASTER_ADDR", "n1", 1);
    auto c = WorldConfig::from_environment();
    REQUIRE(c);
    CHECK((c->rank == 2 && c->size == 4 && c->local_rank == 0 && c->local_size == 2 && c->launcher == "srun"));
  }
  {
    EnvGuard env({{"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_PROCID", "1"}, {"SLURM_LOCALID", "1"},
                  {"SLURM_STEP_TASKS_PER_NODE", "2"}});
    auto c = WorldConfig::from_environment();  // one node: rendezvous on loopback
    REQUIRE(c);
    CHECK(c->master_addr == "127.0.0.1");
  }
  {
    EnvGuard env({{"WORLD_SIZE", "two"}, {"RANK", "0"}});
    CHECK_THROWS_WITH(WorldConfig::from_environment(), Catch::Contains("WORLD_SIZE=two"));
  }
  {
    EnvGuard env({{"WORLD_SIZE", "2"}, {"RANK", "2"}});
    CHECK_THROWS_WITH(WorldConfig::from_environment(), Catch::Contains("not below the world size"));
  }
}

TEST_CASE("collectives: bucketed sums over dtypes, broadcast, agreement, shards", "[core][world]") {
  for (int n : {2, 3}) {
    std::vector<std::vector<torch::Tensor>> seen(static_cast<std::size_t>(n));
    test::run_ranks(n, [&](const WorldConfig& c) {
      World world(c, torch::kCPU);
      const double r = c.rank;
      std::vector<torch::Tensor> t = {torch::full({2, 3}, r + 1), torch::full({5}, static_cast<int64_t>(10 * r), torch::kInt64),
                                      torch::arange(4, torch::kFloat64) * r, torch::full({1}, r)};
      world.all_reduce_sum(t);
      std::vector<torch::Tensor> b = {torch::full({3}, r), torch::full({2, 2}, r).t()};  // a non-contiguous one
      world.broadcast(b, n - 1);
      const bool all = world.all_ok(true), one_failed = world.all_ok(c.rank != 1);  // no Catch2 macros in threads
      auto [begin, end] = world.shard(7);
      t.push_back(torch::tensor({begin, end}));
      t.push_back(torch::tensor({all, one_failed}));
      t.insert(t.end(), b.begin(), b.end());
      seen[static_cast<std::size_t>(c.rank)] = t;
    });
    const double total = n * (n - 1) / 2.0;
    for (int r = 0; r < n; ++r) {
      const auto& t = seen[static_cast<std::size_t>(r)];
      CHECK(t[0].equal(torch::full({2, 3}, total + n)));
      CHECK(t[1].equal(torch::full({5}, static_cast<int64_t>(10 * total), torch::kInt64)));
      CHECK(t[2].equal(torch::arange(4, torch::kFloat64) * total));
      CHECK(t[3].item<float>() == Approx(total));
      CHECK(t[5].equal(torch::tensor({true, false})));
      CHECK(t[6].equal(torch::full({3}, static_cast<float>(n - 1))));
      CHECK(t[7].equal(torch::full({2, 2}, static_cast<float>(n - 1))));
    }
    // contiguous, balanced, covering: 7 rows over 2 ranks: [0,3) [3,7); over 3: [0,2) [2,4) [4,7)
    int64_t covered = 0;
    for (int r = 0; r < n; ++r) {
      auto span = seen[static_cast<std::size_t>(r)][4];
      CHECK(span[0].item<int64_t>() == covered);
      covered = span[1].item<int64_t>();
      CHECK(span[1].item<int64_t>() - span[0].item<int64_t>() >= 7 / n);
    }
    CHECK(covered == 7);
  }
}

TEST_CASE("a rank that dies makes the others fail with a clear error, not hang", "[core][world]") {
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(test::run_ranks(2, [](const WorldConfig& c) {
                      World world(c, torch::kCPU);
                      world.barrier();          // both are up (rank 0's setup may still be finishing otherwise)
                      if (c.rank == 1) return;  // then gone: its connections close
                      world.all_reduce_sum({torch::ones({3})});
                    }, std::chrono::seconds(20)),
                    Catch::Contains("rank 0 of 2: all_reduce failed") && Catch::Contains("another rank has stopped"));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(15));  // noticed, not timed out

  // A rank that never arrives: the rendezvous gives up after the timeout.
  CHECK_THROWS_WITH(test::run_ranks(2, [](const WorldConfig& c) {
                      if (c.rank == 0) World world(c, torch::kCPU);
                    }, std::chrono::seconds(2)),
                    Catch::Contains("rendezvous at 127.0.0.1") && Catch::Contains("must start within 2 s"));
}
