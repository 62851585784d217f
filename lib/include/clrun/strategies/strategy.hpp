// The Strategy interface: a fixed list of hooks that the Trainer calls in this order.
//
//   before_task(TaskContext)                  once per task, before its first step
//   per step:  before_forward(StepContext)    may replace or extend the batch (replay)
//              [forward, task loss]
//              loss_terms(StepContext)        adds named terms to the loss (EWC, SI, LwF, DER)
//              before_backward(StepContext)   sees the final loss (A-GEM reference gradient)
//              [backward]
//              after_backward(StepContext)    edits gradients (MIGU masks, A-GEM projection)
//              [gradient clipping, optimizer step]
//              after_step(StepContext)        sees the updated weights (SI, replay buffers)
//   after_task(TaskContext)                   once per task, after its last step (EWC Fisher,
//                                             SoTU merge)
//   eval_logits(EvalContext, logits)          evaluation-time head restriction / correction
//
// The public hook functions are non-virtual: they count calls and time the per-task hooks,
// then call the protected virtual `on_*` function a strategy overrides. A strategy is one file
// under src/strategies/ with a register function called from components.cpp.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include "clrun/core/registry.hpp"
#include "clrun/models/backbone.hpp"
#include "clrun/streams/stream.hpp"

namespace clrun {

enum class Hook {
  before_task,
  before_forward,
  loss_terms,
  before_backward,
  after_backward,
  after_step,
  after_task,
  eval_logits,
  count_
};
constexpr std::size_t kNumHooks = static_cast<std::size_t>(Hook::count_);
const char* to_string(Hook hook);

/// Handed to the per-task hooks.
struct TaskContext {
  int task = 0;
  Classifier& model;
  const Stream& stream;
  torch::optim::Optimizer* optimizer = nullptr;  ///< null when the task trains nothing
  /// Visits task `task`'s training data in order (no shuffling) in batches of `batch_size`:
  /// fn(inputs, labels), inputs normalised and transformed as in training.
  std::function<void(int task, int64_t batch_size,
                     const std::function<void(const torch::Tensor&, const torch::Tensor&)>& fn)>
      for_each_train_batch;
};

/// Handed to the per-step hooks.
struct StepContext {
  int task = 0;
  int64_t epoch = 0;
  int64_t step = 0;  ///< optimizer steps taken in this task before this one
  Classifier& model;
  torch::optim::Optimizer& optimizer;
  const Stream& stream;
  torch::Tensor x, y;          ///< the batch: normalised inputs and label ids
  torch::Tensor logits, loss;  ///< set after the forward pass; loss is the total being minimised
  std::vector<std::pair<std::string, torch::Tensor>> terms;  ///< named extra loss terms

  /// Adds `term` (a scalar) to the loss under `name`; its mean per task goes to metrics.json.
  void add_loss(const std::string& name, const torch::Tensor& term) {
    loss = loss + term;
    terms.emplace_back(name, term.detach());
  }
};

/// Handed to eval_logits: the row (task just trained; -1 before training) and the task evaluated.
struct EvalContext {
  int trained_task = -1;
  int task = 0;
  Classifier& model;
  const Stream& stream;
};

class Strategy {
 public:
  virtual ~Strategy() = default;

  /// Tasks whose training data is used while learning `task` (default: just `task`). An empty
  /// list trains nothing at this task (the joint bound trains once, at the last task).
  virtual std::vector<int> training_tasks(int task, int num_tasks) const;

  // The hooks, called by the Trainer in the order documented above.
  void before_task(TaskContext& ctx);
  void before_forward(StepContext& ctx) { count(Hook::before_forward); on_before_forward(ctx); }
  void loss_terms(StepContext& ctx) { count(Hook::loss_terms); on_loss_terms(ctx); }
  void before_backward(StepContext& ctx) { count(Hook::before_backward); on_before_backward(ctx); }
  void after_backward(StepContext& ctx) { count(Hook::after_backward); on_after_backward(ctx); }
  void after_step(StepContext& ctx) { count(Hook::after_step); on_after_step(ctx); }
  void after_task(TaskContext& ctx);
  torch::Tensor eval_logits(const EvalContext& ctx, torch::Tensor logits) {
    count(Hook::eval_logits);
    return on_eval_logits(ctx, std::move(logits));
  }

  /// Strategy state for checkpoints (buffers, anchors, Fisher matrices, ...).
  virtual void save(torch::serialize::OutputArchive& archive) const;
  virtual void load(torch::serialize::InputArchive& archive);

  /// Calls per hook and seconds spent in the per-task hooks, for metrics.json.
  nlohmann::json hook_stats() const;
  int64_t hook_count(Hook hook) const { return counts_[static_cast<std::size_t>(hook)]; }

 protected:
  virtual void on_before_task(TaskContext&) {}
  virtual void on_before_forward(StepContext&) {}
  virtual void on_loss_terms(StepContext&) {}
  virtual void on_before_backward(StepContext&) {}
  virtual void on_after_backward(StepContext&) {}
  virtual void on_after_step(StepContext&) {}
  virtual void on_after_task(TaskContext&) {}
  virtual torch::Tensor on_eval_logits(const EvalContext&, torch::Tensor logits) { return logits; }

 private:
  void count(Hook hook) { ++counts_[static_cast<std::size_t>(hook)]; }
  std::array<int64_t, kNumHooks> counts_{};
  double task_hook_seconds_ = 0;
};

/// Strategy builders get the run seed (for any randomness of their own).
using StrategyRegistry = Registry<Strategy, uint64_t>;
void register_finetune(StrategyRegistry& registry);
void register_joint(StrategyRegistry& registry);
void register_cumulative(StrategyRegistry& registry);

/// Options struct for strategies without parameters.
struct NoOptions {
  template <class V>
  void fields(V&) {}
};

}  // namespace clrun
