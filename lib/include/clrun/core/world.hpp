// Data-parallel training: the processes of one run and their c10d process group (a TCPStore
// rendezvous, then Gloo on CPU; NCCL on CUDA where LibTorch has it). Rank 0 writes the run
// directory; every rank trains its shard of each global batch and takes part in every collective.
// A run of one process has no World at all (the pointer is null), so nothing here is on the
// single-process path.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace clrun {

/// Who this process is among the run's processes, and where they meet.
struct WorldConfig {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;  ///< among the processes on this machine (threads, GPUs)
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::seconds timeout{600};  ///< how long a collective or the rendezvous waits for a rank
  std::string launcher;               ///< "torchrun", "srun" or "clrun --nproc" (for metrics.json)

  /// From the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
  /// MASTER_ADDR, MASTER_PORT) or srun's (SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
  /// SLURM_STEP_TASKS_PER_NODE; MASTER_ADDR and MASTER_PORT from the job script, MASTER_ADDR
  /// required when the step spans several nodes). nullopt for a single process. A malformed
  /// variable is an InputError naming it.
  static std::optional<WorldConfig> from_environment();
};

/// A collective failed: another rank died, hung past the timeout, or the rendezvous failed.
struct WorldError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The collectives clrun needs, on tensors of the run's device. Every call is collective: all
/// ranks make the same calls in the same order. A rank that dies or stops answering makes the
/// others' next collective fail with a WorldError (Gloo notices a closed connection at once;
/// a hung rank after `timeout`).
class World {
 public:
  /// Rendezvous and process group; a rank that does not arrive within the timeout is an error.
  World(const WorldConfig& config, torch::Device device);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return config_.rank; }
  int size() const { return config_.size; }
  bool is_main() const { return config_.rank == 0; }
  const WorldConfig& config() const { return config_; }
  const std::string& backend() const { return backend_; }

  /// In place: every tensor becomes the sum of its copies over the ranks. Tensors are packed into
  /// buckets of at most `bucket_bytes` per dtype (one collective per bucket, all in flight at once).
  void all_reduce_sum(const std::vector<torch::Tensor>& tensors) const;
  /// In place: every rank's tensors become rank `root`'s.
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0) const;
  void barrier() const;
  /// Whether every rank passed ok = true (one collective): a rank that failed on its own (rank 0
  /// writing the run directory) lets the others stop with a clear error instead of waiting.
  bool all_ok(bool ok) const;

  /// This rank's rows [begin, end) of `n` rows split into `size()` contiguous, balanced shards.
  std::pair<int64_t, int64_t> shard(int64_t n) const;
  /// For metrics.json: world size, rank, backend, launcher.
  nlohmann::json describe() const;

  static constexpr int64_t bucket_bytes = 25 << 20;  ///< torch DDP's default bucket cap

 private:
  /// Runs a collective, turning the transport's error into a WorldError that names the rank.
  template <class Fn>
  void collective(const char* what, Fn&& fn) const;
  WorldError rendezvous_error(const std::exception& e) const;

  WorldConfig config_;
  torch::Device device_;
  std::string backend_;
  struct Group;  // the c10d process group (its base class differs between LibTorch 1.x and 2.x)
  std::unique_ptr<Group> group_;
};


}  // namespace clrun
