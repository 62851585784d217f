// Backbones (inputs -> features). A backbone is one file with a register function;
// components.cpp calls them all. Fully connected layers are clrun::nn::Linear (taps).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "clrun/core/registry.hpp"
#include "clrun/models/linear.hpp"

namespace clrun {

class Backbone : public torch::nn::Module {
 public:
  /// Features [B, feature_dim()] of normalised inputs [B, C, H, W].
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual int64_t feature_dim() const = 0;
  /// What the reference implementation calls the classifier over these features (timm: head,
  /// torchvision: fc): pre-trained files are read, and exports written, with that name.
  virtual std::string head_name() const { return "head"; }
};

/// Backbone builders get the input shape [C, H, W].
using BackboneRegistry = Registry<Backbone, std::vector<int64_t>>;
void register_mlp(BackboneRegistry& registry);
void register_cnn(BackboneRegistry& registry);
void register_vit(BackboneRegistry& registry);
void register_resnet(BackboneRegistry& registry);
void register_t5(BackboneRegistry& registry);

/// Number of trainable scalars.
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace clrun
