// The replay memory shared by replay (ER), der, derpp and agem: a fixed number of slots holding
// training-set row indices (the inputs are rebuilt from the stream when sampled, images or
// token ids alike), label ids, task ids and, for DER, the logits at insertion. Filled by reservoir sampling over the stream (Mammoth's rule) or
// class-balanced (equal slots per seen class; when full, the largest class gives up a slot, and a
// sample of a largest class replaces one of its own class by a per-class reservoir draw).
// Its state, generator draws included, is part of the strategy checkpoint.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/serialize/archive.h>

#include "clrun/core/config.hpp"
#include "clrun/data/batch.hpp"
#include "clrun/streams/stream.hpp"

namespace clrun {

/// The memory's keys, shared by every strategy that keeps one.
struct MemoryOptions {
  int64_t memory_size = 500;
  std::string policy = "reservoir";
  int64_t replay_batch_size = 0;

  template <class V>
  void fields(V& v) {
    v("memory_size", memory_size, "memory slots (samples kept over the whole stream)", at_least(0));
    v("policy", policy, "how the memory is filled: reservoir sampling over the stream, or equal slots per class",
      one_of({"reservoir", "class_balanced"}));
    v("replay_batch_size", replay_batch_size, "memory rows drawn per step (per draw); 0 = the minibatch size",
      at_least(0));
  }
};

class ReplayMemory {
 public:
  enum class Policy { reservoir, class_balanced };
  ReplayMemory(int64_t capacity, Policy policy) : capacity_(capacity), policy_(policy) {}

  /// Offers the rows of `current` (rows of the stream's training split, `current.index`, all of
  /// task `task`) to the memory; `logits` (or undefined) are stored with them.
  void add(const Stream& stream, const Batch& current, const torch::Tensor& logits, int task, at::Generator& gen);
  /// `n` rows drawn uniformly without replacement (fewer if the memory holds fewer), inputs
  /// prepared as in training, stored logits in extra["logits"]. Data parallel: the memory is the
  /// same on every rank (it takes in StepContext::global_current), every rank makes the same draw
  /// from the same generator state and keeps its shard of it.
  Batch sample(const Stream& stream, int64_t n, at::Generator& gen) const;

  int64_t size() const { return filled_; }
  int64_t seen() const { return seen_; }
  bool empty() const { return filled_ == 0; }
  /// Rows per label id, for tests and metrics.json.
  std::vector<int64_t> class_counts() const;

  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive, torch::Device device);
  nlohmann::json describe() const;

 private:
  /// Slot for the next offered sample of label `label`, or -1 to drop it.
  int64_t choose_slot(int64_t label, at::Generator& gen);
  void allocate(const torch::Tensor& rows, const torch::Tensor& logits);

  int64_t capacity_;
  Policy policy_;
  int64_t filled_ = 0, seen_ = 0;
  torch::Tensor rows_, labels_, task_ids_, logits_;  ///< [capacity, ...]: training-set rows, their class ids, tasks, stored logits
  std::vector<int64_t> slot_labels_;                 ///< host copy of labels_ (class-balanced)
  std::vector<int64_t> seen_per_class_;
  std::vector<int> tasks_;  ///< tasks present, for per-task input transforms
};

ReplayMemory::Policy memory_policy(const std::string& name);

/// Uniform integer in [0, n) from a CPU generator.
int64_t uniform_index(at::Generator& gen, int64_t n);

}  // namespace clrun
