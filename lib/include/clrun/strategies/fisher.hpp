// Diagonal Fisher information of a model on one task's training data, for EWC.
//   empirical_batch   mean over minibatches of (grad of the minibatch mean loss)^2 (Avalanche)
//   empirical_sample  mean over samples of (grad of -log p(y|x))^2 (the default)
//   expected          the same with y drawn from the model's predictive distribution
// Per-sample gradients of clrun Linear layers come in a batch through the taps:
// sum_n (g_n^2)^T (x_n^2) for the weight and sum_n g_n^2 for the bias, where g_n = dLoss_n/dy_n
// is the layer's output gradient and x_n its input; the backward computes no weight gradients.
// Other parameters (convolutions) fall back to one backward per sample. `fisher_weighting:
// probability` multiplies each sample's squared gradient by p(y|x) (Mammoth's ewc_on).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "clrun/core/config.hpp"
#include "clrun/strategies/strategy.hpp"

namespace clrun {

struct FisherOptions {
  std::string fisher = "empirical_sample";
  int64_t fisher_samples = 0;     ///< 0 = every training sample of the task
  int64_t fisher_batch_size = 128;
  std::string fisher_mode = "eval";
  std::string fisher_weighting = "none";

  template <class V>
  void fields(V& v) {
    v("fisher", fisher, "Fisher estimator", one_of({"empirical_sample", "empirical_batch", "expected"}));
    v("fisher_samples", fisher_samples, "use the task's first N training samples (stored order); 0 = all", at_least(0));
    v("fisher_batch_size", fisher_batch_size, "batch size of the Fisher pass (empirical_batch: the minibatch of the mean loss)",
      at_least(1));
    v("fisher_mode", fisher_mode, "model mode during the Fisher pass (dropout/BatchNorm)", one_of({"eval", "train"}));
    v("fisher_weighting", fisher_weighting,
      "per-sample estimators: none, or probability (each sample's squared gradient times p(y|x), as Mammoth's ewc_on)",
      one_of({"none", "probability"}));
  }
};

/// The diagonal Fisher of every trainable parameter of ctx.model (same order as
/// parameters(), undefined for frozen ones) on task ctx.task's training data.
std::vector<torch::Tensor> estimate_fisher(TaskContext& ctx, const FisherOptions& options, at::Generator& gen);

/// The same by one backward per sample over every trainable parameter: the reference the
/// batched estimator is tested and benchmarked against.
std::vector<torch::Tensor> estimate_fisher_per_sample_loop(TaskContext& ctx, const FisherOptions& options,
                                                           at::Generator& gen);

}  // namespace clrun
