// Backbones (inputs -> features) and the Classifier (backbone + linear head) that strategies
// train. A backbone is one file with a register function; components.cpp calls them all.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "clrun/core/registry.hpp"

namespace clrun {

class Backbone : public torch::nn::Module {
 public:
  /// Features [B, feature_dim()] of normalised inputs [B, C, H, W].
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual int64_t feature_dim() const = 0;
};

/// Backbone builders get the input shape [C, H, W].
using BackboneRegistry = Registry<Backbone, std::vector<int64_t>>;
void register_mlp(BackboneRegistry& registry);
void register_cnn(BackboneRegistry& registry);

/// A backbone with one linear head over every class of the stream. Task-IL is multi-head by
/// masking this head's logits to the task's classes.
class ClassifierImpl : public torch::nn::Module {
 public:
  ClassifierImpl(std::shared_ptr<Backbone> backbone, int64_t num_classes);
  torch::Tensor forward(const torch::Tensor& x) { return head->forward(backbone->forward(x)); }
  torch::Tensor features(const torch::Tensor& x) { return backbone->forward(x); }

  std::shared_ptr<Backbone> backbone;
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(Classifier);

/// Number of trainable scalars.
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace clrun
