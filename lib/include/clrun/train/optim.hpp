// Optimizers (sgd, adam, adamw: LibTorch's own) and learning-rate schedulers (constant, cosine,
// step). Schedulers restart every task; they map (unit, total units) to a learning rate, where a
// unit is an epoch or an optimizer step (`interval`).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>

#include "clrun/core/registry.hpp"

namespace clrun {

/// Optimizer builders get the parameter groups to optimise (each with the optimizer's defaults).
using OptimizerRegistry = Registry<torch::optim::Optimizer, std::vector<torch::optim::OptimizerParamGroup>>;
void register_optimizers(OptimizerRegistry& registry);

/// The learning rate of the first parameter group.
double get_lr(const torch::optim::Optimizer& optimizer);

class Scheduler {
 public:
  enum class Interval { epoch, step };
  virtual ~Scheduler() = default;
  /// Learning rate at `unit` of `total_units` (0-based), for base rate `base_lr`.
  virtual double lr(double base_lr, int64_t unit, int64_t total_units) const = 0;
  Interval interval = Interval::epoch;
};

using SchedulerRegistry = Registry<Scheduler>;
void register_schedulers(SchedulerRegistry& registry);

}  // namespace clrun
