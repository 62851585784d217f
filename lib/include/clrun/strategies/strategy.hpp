// The Strategy interface: a fixed list of hooks that the Trainer calls in this order.
//
//   setup(StrategyEnv)                        once, before any checkpoint is loaded
//   before_task(TaskContext)                  once per task, before its first step
//   parameter_groups(TaskContext)             which parameters train at this task; the optimizer
//                                             is built from them after before_task
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
//   eval_forward(EvalContext, batch)          evaluation: the logits of a batch (default: the
//                                             model's forward; SoTU's heads read the features)
//   eval_logits(EvalContext, logits)          evaluation-time head restriction / correction
//
// The public hook functions are non-virtual: they count calls and time the per-task hooks,
// then call the protected virtual `on_*` function a strategy overrides. A strategy is one file
// under src/strategies/ with a register function called from components.cpp. Its own randomness
// comes from rng(), derived from the run seed and saved in checkpoints with the hook counts.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include "clrun/core/registry.hpp"
#include "clrun/core/world.hpp"
#include "clrun/data/batch.hpp"
#include "clrun/models/model.hpp"
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
  eval_forward,
  count_
};
constexpr std::size_t kNumHooks = static_cast<std::size_t>(Hook::count_);
const char* to_string(Hook hook);

/// How the task loss is taken, shared by the training step and the per-task hooks: the model and
/// the per-task logit masks of train.logits ([num_tasks, C], undefined = every logit).
struct LossFn {
  torch::Tensor masks;
  torch::Tensor operator()(Model& model, const torch::Tensor& output, const Batch& batch) const {
    return model.task_loss(output, batch, masks);
  }
};

/// Given once to a strategy, before anything else.
struct StrategyEnv {
  uint64_t seed = 0;
  const Stream* stream = nullptr;
  torch::Device device = torch::kCPU;
  ModelFactory make_model;  ///< a fresh model of the run's architecture on the run's device
  /// The run's model. setup() may add modules to it (LoRA adapters): it runs before any
  /// checkpoint is loaded into the model.
  Model* model = nullptr;
  /// Data-parallel training: the run's processes (null for one process). Hooks see this rank's
  /// shard of each batch; a strategy whose statistics must cover the global batch reduces them
  /// here, in a hook every rank runs (MIGU's magnitudes in after_backward).
  const World* world = nullptr;
};

/// A group of parameters trained together; parameters in no group are frozen (no gradient).
struct ParamGroup {
  std::vector<torch::Tensor> params;
  double lr_scale = 1;  ///< this group's learning rate = the scheduled rate * lr_scale
};

/// Handed to the per-task hooks.
struct TaskContext {
  int task = 0;
  Model& model;
  const Stream& stream;
  const LossFn& loss;
  torch::optim::Optimizer* optimizer = nullptr;  ///< null before the optimizer is built / when nothing trains
  /// Visits task `task`'s training data in stored order (no shuffling) in batches of
  /// `batch_size`, inputs normalised and transformed as in training. `limit` > 0 stops after
  /// that many rows.
  std::function<void(int task, int64_t batch_size, int64_t limit, const std::function<void(const Batch&)>& fn)>
      for_each_train_batch;
};

/// Handed to the per-step hooks.
struct StepContext {
  int task = 0;
  int64_t epoch = 0;
  int64_t step = 0;  ///< optimizer steps taken in this task before this one
  Model& model;
  torch::optim::Optimizer& optimizer;
  const Stream& stream;
  const LossFn& loss_fn;
  Batch batch;               ///< the minibatch; before_forward may append rows (replay)
  int64_t current_rows = 0;  ///< the first current_rows rows of `batch` are the current task's
  /// The current rows of the whole step (every rank's; = batch.head(current_rows) for one
  /// process): what a replay memory takes in, so that it does not depend on the world size.
  Batch global_current;
  /// Data parallel: this rank's part of the step's loss, which the trainer multiplies by it
  /// before backward (its loss units over the global batch's); 1 for one process. A strategy that
  /// appends rows to a sharded batch sets it for the joint batch (replay).
  double share = 1;
  torch::Tensor output;      ///< the model's output on `batch` (set after the forward pass)
  torch::Tensor loss;        ///< the total being minimised (set after the forward pass)
  std::vector<std::pair<std::string, torch::Tensor>> terms;  ///< named extra loss terms
  /// Data parallel: where this rank's current rows sit in global_current, as [begin, end) row
  /// ranges in their order in `batch` (one per micro-batch); empty for one process.
  std::vector<std::pair<int64_t, int64_t>> shard_spans;

  /// Values of every rank's current rows from this rank's: `local` has one row per current row
  /// of this rank (in `batch` order); the result one per row of global_current (one collective,
  /// so every rank calls it in the same hook). One process: `local` itself.
  torch::Tensor gather_current(const torch::Tensor& local, const World* world) const;

  /// The task loss of `out` on `b` (logit masks by each row's task, batch weights honoured).
  torch::Tensor task_loss(const torch::Tensor& out, const Batch& b) const { return loss_fn(model, out, b); }
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
  Model& model;
  const Stream& stream;
};

class Strategy {
 public:
  virtual ~Strategy() = default;

  /// Tasks whose training data is used while learning `task` (default: just `task`). An empty
  /// list trains nothing at this task (the joint bound trains once, at the last task).
  virtual std::vector<int> training_tasks(int task, int num_tasks) const;
  /// The rows of task `source` (one of training_tasks(task)) trained on at `task` (default: all
  /// its training rows; cumulative's past_fraction mixes in a fixed share of earlier tasks).
  virtual torch::Tensor training_rows(int task, int source, const Stream& stream) const;
  /// Parameters trained at this task (default: every parameter of the model, one group).
  virtual std::vector<ParamGroup> parameter_groups(TaskContext& ctx);

  // The hooks, called by the Trainer in the order documented above.
  void setup(const StrategyEnv& env);
  void before_task(TaskContext& ctx);
  void before_forward(StepContext& ctx) { count(Hook::before_forward); on_before_forward(ctx); }
  void loss_terms(StepContext& ctx) { count(Hook::loss_terms); on_loss_terms(ctx); }
  void before_backward(StepContext& ctx) { count(Hook::before_backward); on_before_backward(ctx); }
  void after_backward(StepContext& ctx) { count(Hook::after_backward); on_after_backward(ctx); }
  void after_step(StepContext& ctx) { count(Hook::after_step); on_after_step(ctx); }
  void after_task(TaskContext& ctx);
  torch::Tensor eval_forward(const EvalContext& ctx, const Batch& batch) {
    count(Hook::eval_forward);
    return on_eval_forward(ctx, batch);
  }
  torch::Tensor eval_logits(const EvalContext& ctx, torch::Tensor logits) {
    count(Hook::eval_logits);
    return on_eval_logits(ctx, std::move(logits));
  }

  /// Checkpoint: hook counts, the generator's state, then the strategy's own state (save/load).
  void save_state(torch::serialize::OutputArchive& archive) const;
  void load_state(torch::serialize::InputArchive& archive);

  /// Calls per hook and seconds spent in the per-task hooks, for metrics.json.
  nlohmann::json hook_stats() const;
  int64_t hook_count(Hook hook) const { return counts_[static_cast<std::size_t>(hook)]; }
  /// Strategy-specific figures for metrics.json (e.g. memory size, Fisher statistics).
  virtual nlohmann::json describe() const { return nlohmann::json::object(); }

 protected:
  virtual void on_setup() {}
  virtual void on_before_task(TaskContext&) {}
  virtual void on_before_forward(StepContext&) {}
  virtual void on_loss_terms(StepContext&) {}
  virtual void on_before_backward(StepContext&) {}
  virtual void on_after_backward(StepContext&) {}
  virtual void on_after_step(StepContext&) {}
  virtual void on_after_task(TaskContext&) {}
  virtual torch::Tensor on_eval_forward(const EvalContext& ctx, const Batch& batch) { return ctx.model.forward(batch); }
  virtual torch::Tensor on_eval_logits(const EvalContext&, torch::Tensor logits) { return logits; }
  /// The strategy's own checkpoint state (buffers, anchors, Fisher matrices, teachers, ...).
  virtual void save(torch::serialize::OutputArchive&) const {}
  virtual void load(torch::serialize::InputArchive&) {}

  const StrategyEnv& env() const { return env_; }
  /// The strategy's generator (CPU), seeded from the run seed; checkpointed.
  at::Generator& rng() { return rng_; }

 private:
  void count(Hook hook) { ++counts_[static_cast<std::size_t>(hook)]; }
  std::array<int64_t, kNumHooks> counts_{};
  double task_hook_seconds_ = 0;
  StrategyEnv env_;
  at::Generator rng_;
};

/// Strategy builders get the run seed (for any randomness of their own).
using StrategyRegistry = Registry<Strategy, uint64_t>;

/// A strategy block nested in another strategy's options (`base: {name: replay, ...}`): parsed
/// with the strategy registry, written back in full in the resolved config. Empty = finetune.
struct StrategyBlock {
  Component<StrategyRegistry> component;
  /// The strategy it describes (a plain finetune Strategy when empty).
  std::shared_ptr<Strategy> build(uint64_t seed) const;
};
void to_json(nlohmann::json& j, const StrategyBlock& block);
template <>
struct Decoder<StrategyBlock> {
  static StrategyBlock decode(const ConfigNode& node);
};

/// Composition: a strategy that wraps another (its `base`) and forwards every hook, parameter
/// group, training-task choice and checkpoint to it. In each hook the base runs first and the
/// wrapper's own work after it (MIGU masks the gradient that EWC or A-GEM produced), except
/// after_step, where the wrapper runs first so that the base sees the weights the step left.
class WrapperStrategy : public Strategy {
 public:
  explicit WrapperStrategy(std::shared_ptr<Strategy> base) : base_(std::move(base)) {}
  std::vector<int> training_tasks(int task, int num_tasks) const override { return base_->training_tasks(task, num_tasks); }
  torch::Tensor training_rows(int task, int source, const Stream& stream) const override {
    return base_->training_rows(task, source, stream);
  }
  std::vector<ParamGroup> parameter_groups(TaskContext& ctx) override { return base_->parameter_groups(ctx); }
  nlohmann::json describe() const override {
    return {{"base", base_->describe()}, {"base_hook_calls", base_->hook_stats().at("calls")}};
  }
  Strategy& base() { return *base_; }

 protected:
  void on_setup() override { base_->setup(env()); }
  void on_before_task(TaskContext& ctx) override { base_->before_task(ctx); }
  void on_before_forward(StepContext& ctx) override { base_->before_forward(ctx); }
  void on_loss_terms(StepContext& ctx) override { base_->loss_terms(ctx); }
  void on_before_backward(StepContext& ctx) override { base_->before_backward(ctx); }
  void on_after_backward(StepContext& ctx) override { base_->after_backward(ctx); }
  void on_after_step(StepContext& ctx) override { base_->after_step(ctx); }
  void on_after_task(TaskContext& ctx) override { base_->after_task(ctx); }
  torch::Tensor on_eval_forward(const EvalContext& ctx, const Batch& batch) override {
    return base_->eval_forward(ctx, batch);
  }
  torch::Tensor on_eval_logits(const EvalContext& ctx, torch::Tensor logits) override {
    return base_->eval_logits(ctx, std::move(logits));
  }
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  std::shared_ptr<Strategy> base_;
};
void register_finetune(StrategyRegistry& registry);
void register_joint(StrategyRegistry& registry);
void register_cumulative(StrategyRegistry& registry);
void register_ewc(StrategyRegistry& registry);
void register_si(StrategyRegistry& registry);
void register_lwf(StrategyRegistry& registry);
void register_replay(StrategyRegistry& registry);  // replay (ER), der, derpp
void register_agem(StrategyRegistry& registry);
void register_migu(StrategyRegistry& registry);
void register_sotu(StrategyRegistry& registry);  // sotu, ranpac
void register_lora(StrategyRegistry& registry);  // lora, inclora, olora

/// Options struct for strategies without parameters.
struct NoOptions {
  template <class V>
  void fields(V&) {}
};

// ---- helpers for strategy state in checkpoints ------------------------------------------------

/// Writes `tensors` under `key` (a list that may be empty or hold undefined entries).
void write_tensors(torch::serialize::OutputArchive& archive, const std::string& key,
                   const std::vector<torch::Tensor>& tensors);
std::vector<torch::Tensor> read_tensors(torch::serialize::InputArchive& archive, const std::string& key,
                                        torch::Device device);
/// A-GEM's projection, in place: where grads . reference < 0, grads -= (g.r / r.r) reference
/// (over every entry defined in both lists, as one flat vector).
void agem_project(std::vector<torch::Tensor>& grads, const std::vector<torch::Tensor>& reference);

/// MIGU's row mask: bool [d] = magnitudes >= their T-quantile (linear interpolation at position
/// T*(d-1) in float64; ties kept); every row when all magnitudes are 0.
torch::Tensor migu_row_mask(const torch::Tensor& magnitudes, double threshold);

/// This rank's contiguous shard of `batch` (World::shard); the whole batch for one process.
Batch own_shard(const Batch& batch, const World* world);

/// Trainable parameters of `model` as detached copies (anchors, snapshots).
std::vector<torch::Tensor> snapshot_parameters(Model& model);

}  // namespace clrun
