// The process group of a data-parallel run: TCPStore rendezvous on MASTER_ADDR:MASTER_PORT (rank
// 0 serves it), Gloo on CPU, NCCL on CUDA when LibTorch was built with it (CLRUN_WITH_NCCL).
#include "clrun/core/world.hpp"

#include <algorithm>
#include <cstdlib>
#include <map>

#include <spdlog/spdlog.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef CLRUN_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/torch.h>
#include <torch/version.h>

#include "clrun/core/error.hpp"

namespace clrun {

// LibTorch 2 made Gloo and NCCL c10d::Backend implementations; in 1.x they are ProcessGroups.
// Both have the collectives used here with the same signatures.
struct World::Group {
#if TORCH_VERSION_MAJOR >= 2
  c10::intrusive_ptr<c10d::Backend> pg;
#else
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
#endif
};

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int env_int(const char* name, int fallback, int min) {
  auto v = env(name);
  if (!v) return fallback;
  try {
    std::size_t used = 0;
    const int x = std::stoi(*v, &used);
    // Slurm's per-node counts look like "2(x3)": the count is the leading number.
    if (used == 0 || x < min) throw std::invalid_argument(*v);
    return x;
  } catch (const std::exception&) {
    throw InputError(std::string("environment variable ") + name + "=" + *v + ": expected an integer >= " +
                     std::to_string(min));
  }
}

/// An exception's message without the C++ stack trace that c10 errors carry.
std::string message_of(const std::exception& e) {
  if (auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

std::optional<WorldConfig> WorldConfig::from_environment() {
  WorldConfig c;
  if (env("WORLD_SIZE")) {  // torchrun, or clrun --nproc
    c.size = env_int("WORLD_SIZE", 1, 1);
    c.rank = env_int("RANK", 0, 0);
    c.local_rank = env_int("LOCAL_RANK", c.rank, 0);
    c.local_size = env_int("LOCAL_WORLD_SIZE", c.size, 1);
    c.launcher = env("CLRUN_LAUNCHER").value_or("torchrun");
  } else if (env("SLURM_STEP_NUM_TASKS")) {  // srun (a plain sbatch script is one process)
    c.size = env_int("SLURM_STEP_NUM_TASKS", 1, 1);
    c.rank = env_int("SLURM_PROCID", 0, 0);
    c.local_rank = env_int("SLURM_LOCALID", 0, 0);
    c.local_size = env_int("SLURM_STEP_TASKS_PER_NODE", 1, 1);
    c.launcher = "srun";
    if (c.size > 1 && !env("MASTER_ADDR") && env_int("SLURM_STEP_NUM_NODES", 1, 1) > 1)
      throw InputError("srun with " + std::to_string(c.size) + " tasks on several nodes: set MASTER_ADDR (the first "
                       "node: export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1)) and "
                       "MASTER_PORT in the job script");
  } else {
    return std::nullopt;
  }
  if (c.size == 1) return std::nullopt;
  if (c.rank >= c.size)
    throw InputError("rank " + std::to_string(c.rank) + " is not below the world size " + std::to_string(c.size));
  c.master_addr = env("MASTER_ADDR").value_or("127.0.0.1");
  c.master_port = env_int("MASTER_PORT", c10d::TCPStoreOptions::kDefaultPort, 1);
  if (c.master_port > 65535) throw InputError("MASTER_PORT=" + std::to_string(c.master_port) + ": not a TCP port");
  c.timeout = std::chrono::seconds(env_int("CLRUN_DIST_TIMEOUT", static_cast<int>(c.timeout.count()), 1));
  return c;
}

World::World(const WorldConfig& config, torch::Device device)
    : config_(config), device_(device), group_(std::make_unique<Group>()) {
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(config_.timeout);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(config_.master_port);
    options.isServer = config_.rank == 0;
    options.numWorkers = static_cast<std::size_t>(config_.size);
    options.waitWorkers = true;
    options.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(config_.master_addr, options);
  } catch (const std::exception& e) {
    throw rendezvous_error(e);
  }
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("clrun", store);
  if (device_.is_cuda()) {
#ifdef CLRUN_WITH_NCCL
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    group_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, config_.rank, config_.size, options);
    backend_ = "nccl";
#else
    throw InputError("data-parallel training on " + device_.str() + " needs NCCL, and this clrun was built against a "
                     "LibTorch without it; run on the CPU or build against a CUDA LibTorch");
#endif
  } else {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    // Loopback rendezvous: the transport stays on loopback too (tests, one machine). Otherwise
    // GLOO_SOCKET_IFNAME picks the interface, as in PyTorch, else the host name's address.
    if (auto ifname = env("GLOO_SOCKET_IFNAME"))
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*ifname));
    else if (is_loopback(config_.master_addr))
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    options->threads = 1;
    try {
      group_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, config_.rank, config_.size, options);
    } catch (const std::exception& e) {
      throw rendezvous_error(e);
    }
    backend_ = "gloo";
  }
}

World::~World() = default;

WorldError World::rendezvous_error(const std::exception& e) const {
  return WorldError("rank " + std::to_string(config_.rank) + ": rendezvous at " + config_.master_addr + ":" +
                    std::to_string(config_.master_port) + " failed (all " + std::to_string(config_.size) +
                    " ranks must start within " + std::to_string(config_.timeout.count()) + " s): " + message_of(e));
}

template <class Fn>
void World::collective(const char* what, Fn&& fn) const {
  try {
    fn();
  } catch (const std::exception& e) {
    const std::string why = message_of(e);
    throw WorldError("rank " + std::to_string(config_.rank) + " of " + std::to_string(config_.size) + ": " + what +
                     " failed; another rank has stopped or did not answer within " +
                     std::to_string(config_.timeout.count()) + " s (its own error says why): " + why);
  }
}

void World::all_reduce_sum(const std::vector<torch::Tensor>& tensors) const {
  // Buckets of one dtype, filled in order; each flat bucket is one collective, all in flight
  // at once, then copied back.
  struct Bucket {
    std::vector<torch::Tensor> members;
    int64_t bytes = 0;
    torch::Tensor flat;
  };
  std::vector<Bucket> buckets;
  std::map<c10::ScalarType, std::size_t> open;  // dtype -> the bucket being filled
  for (const torch::Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    auto it = open.find(t.scalar_type());
    if (it == open.end() || buckets[it->second].bytes + bytes > bucket_bytes) {
      buckets.emplace_back();
      it = open.insert_or_assign(t.scalar_type(), buckets.size() - 1).first;
    }
    buckets[it->second].members.push_back(t);
    buckets[it->second].bytes += bytes;
  }
  collective("all_reduce", [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> work;
    for (Bucket& b : buckets) {
      std::vector<torch::Tensor> flat_parts;
      for (const auto& t : b.members) flat_parts.push_back(t.reshape({-1}));
      b.flat = torch::cat(flat_parts);  // a fresh tensor even for one member
      std::vector<torch::Tensor> one{b.flat};
      c10d::AllreduceOptions options;
      options.reduceOp = c10d::ReduceOp::SUM;
      work.push_back(group_->pg->allreduce(one, options));
    }
    for (auto& w : work) w->wait();
  });
  for (Bucket& b : buckets) {
    int64_t offset = 0;
    for (const torch::Tensor& t : b.members) {
      t.copy_(b.flat.narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

void World::broadcast(const std::vector<torch::Tensor>& tensors, int root) const {
  collective("broadcast", [&] {
    for (const torch::Tensor& t : tensors) {
      if (!t.defined() || t.numel() == 0) continue;
      std::vector<torch::Tensor> one{t.is_contiguous() ? t : t.contiguous()};
      c10d::BroadcastOptions options;
      options.rootRank = root;
      group_->pg->broadcast(one, options)->wait();
      if (!t.is_contiguous()) t.copy_(one[0]);
    }
  });
}

void World::barrier() const {
  collective("barrier", [&] { group_->pg->barrier()->wait(); });
}

bool World::all_ok(bool ok) const {
  torch::Tensor flag = torch::full({1}, ok ? 0 : 1, torch::TensorOptions(torch::kInt32).device(device_));
  all_reduce_sum({flag});
  return flag.item<int>() == 0;
}

std::pair<int64_t, int64_t> World::shard(int64_t n) const {
  const int64_t r = config_.rank, w = config_.size;
  return {n * r / w, n * (r + 1) / w};
}

nlohmann::json World::describe() const {
  return {{"world_size", config_.size}, {"rank", config_.rank}, {"backend", backend_}, {"launcher", config_.launcher},
          {"sharding", "each global batch split into contiguous per-rank shards; gradients summed over ranks "
                       "(each rank's loss weighted by its share of the rows); evaluation rows sharded, counts summed"}};
}

}  // namespace clrun
