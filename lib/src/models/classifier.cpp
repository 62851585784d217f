// Classifier: backbone + linear head.
#include "clrun/models/backbone.hpp"

namespace clrun {

ClassifierImpl::ClassifierImpl(std::shared_ptr<Backbone> backbone_, int64_t num_classes)
    : backbone(register_module("backbone", std::move(backbone_))),
      head(register_module("head", torch::nn::Linear(backbone->feature_dim(), num_classes))) {}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

}  // namespace clrun
