// The Trainer: one task's training loop (shuffled minibatches by index, strategy hooks, no host
// syncs per step), the optimizer's lifetime (built after before_task from the strategy's parameter
// groups), and the model/optimizer/strategy/RNG checkpoint.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "clrun/config/spec.hpp"
#include "clrun/core/world.hpp"
#include "clrun/io/progress.hpp"
#include "clrun/models/model.hpp"
#include "clrun/strategies/strategy.hpp"
#include "clrun/streams/stream.hpp"

namespace clrun {

/// What one task's training did, for the log and metrics.json.
struct TaskStats {
  int task = 0;
  std::vector<int> trained_on;  ///< tasks whose data was used
  int64_t steps = 0, samples = 0, epochs = 0;
  double seconds = 0;
  double mean_loss = 0;                 ///< mean total loss over the task's steps
  std::map<std::string, double> terms;  ///< mean of each named extra loss term
  double final_lr = 0;
  nlohmann::json to_json() const;
  static TaskStats from_json(const nlohmann::json& j);
};

class Trainer {
 public:
  /// Calls strategy.setup(); `make_model` builds fresh models of the same architecture.
  /// `world` (data-parallel training; null for one process): after strategy.setup() (which may
  /// add adapters) rank 0's weights are broadcast, each rank trains its shard of every global batch, gradients are summed over ranks
  /// before after_backward, and BatchNorm statistics are made rank 0's at the end of each task.
  Trainer(const ExperimentSpec& spec, Stream& stream, std::shared_ptr<Model> model, Strategy& strategy,
          ModelFactory make_model, const World* world = nullptr);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // -- per task ------------------------------------------------------------------------------
  /// Trains task `task` (hooks included). Throws Interrupted at a step boundary on Ctrl-C.
  TaskStats train_task(int task);

  // -- observers -----------------------------------------------------------------------------
  void set_progress(Progress* progress) { progress_ = progress; }
  /// Called after every optimizer step with (task, steps done in the task); tests use it.
  void set_step_callback(std::function<void(int, int64_t)> fn) { on_step_ = std::move(fn); }
  /// When the first optimizer step of this process finished, if any.
  std::optional<std::chrono::steady_clock::time_point> first_step_time() const { return first_step_; }
  Model& model() { return *model_; }

  // -- checkpoint ----------------------------------------------------------------------------
  /// Writes model, optimizer, strategy, torch RNG state and `state` (run progress) atomically.
  void save_checkpoint(const std::string& path, const nlohmann::json& state) const;
  /// Restores what save_checkpoint wrote and returns `state`.
  nlohmann::json load_checkpoint(const std::string& path);

 private:
  /// The rows (and their tasks) trained on at `task`, as chosen by the strategy.
  struct TrainingSet {
    std::vector<int> tasks;
    torch::Tensor rows, task_ids;
    bool single_transform = true;  ///< every row can use the same Task for its inputs
  };
  /// Step-loop sums reported in TaskStats.
  struct Totals {
    torch::Tensor loss;
    std::map<std::string, torch::Tensor> terms;
    int64_t steps = 0, samples = 0;
  };
  TrainingSet training_set(int task) const;
  /// The minibatch at `positions` of `set`; `train_transforms` draws its random image transforms.
  /// train.group_by_length: `order` (positions in `set`) cut into chunks of `megabatch`, each
  /// sorted by source length, longest first (stable).
  torch::Tensor group_by_length(const torch::Tensor& order, const TrainingSet& set, int64_t megabatch) const;
  Batch make_batch(const TrainingSet& set, const torch::Tensor& positions, const Task& current,
                   at::Generator* train_transforms) const;
  /// Per-task logit masks for train.logits while training `task`.
  torch::Tensor loss_masks(int task) const;
  /// Freezes what no group holds and (re)builds the optimizer if needed.
  void prepare_optimizer(const std::vector<ParamGroup>& groups, bool fresh);
  void set_learning_rate(double lr);
  void zero_grad();
  void clip_gradients() const;
  /// Data parallel: sums the gradients over the ranks (with which parameters have one, so that a
  /// parameter no rank reached keeps none) and whether any rank asked to stop (Ctrl-C, SIGTERM).
  bool reduce_gradients(bool stop);
  /// Data parallel: the sum over ranks of each rank's share of the task's figures.
  void reduce_totals(Totals& totals) const;
  /// One optimizer step over one or more micro-batches, with every per-step hook.
  void step(int task, int64_t epoch, std::vector<Batch> micro, Totals& totals);
  /// Adds terms[from..] (name, detached scalar) times `scale` to the task's sums.
  static void add_terms(Totals& totals, const std::vector<std::pair<std::string, torch::Tensor>>& terms,
                        std::size_t from, double scale);
  /// Throws Diverged when the loss sum is not finite (one host sync; data parallel: decided on
  /// the sum over ranks, so every rank stops together).
  void check_finite(const Totals& totals, int task, int64_t epoch) const;
  /// The context after_backward/after_step see when a step had several micro-batches.
  StepContext& merge_micro_batches(std::vector<StepContext>& micro) const;

  const ExperimentSpec& spec_;
  const World* world_ = nullptr;
  Stream& stream_;
  std::shared_ptr<Model> model_;
  Strategy& strategy_;
  LossFn loss_fn_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<double> lr_scales_;  ///< per optimizer group
  std::shared_ptr<Scheduler> scheduler_;
  double base_lr_ = 0;
  Progress* progress_ = nullptr;
  std::function<void(int, int64_t)> on_step_;
  std::optional<std::chrono::steady_clock::time_point> first_step_;
};

}  // namespace clrun
