// Model defaults and the Classifier: backbone + linear head, masked cross-entropy.
#include "clrun/models/model.hpp"

#include <torch/torch.h>

namespace clrun {

torch::Tensor Model::task_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) {
  torch::Tensor rows = row_loss(output, batch, masks);
  return batch.weights.defined() ? (rows * batch.weights).sum() : rows.mean();
}

void copy_state(const torch::nn::Module& src, torch::nn::Module& dst) {
  torch::NoGradGuard no_grad;
  auto from = src.named_parameters(), to = dst.named_parameters();
  for (auto& item : to) item.value().copy_(from[item.key()]);
  auto from_b = src.named_buffers(), to_b = dst.named_buffers();
  for (auto& item : to_b) item.value().copy_(from_b[item.key()]);
}

Classifier::Classifier(std::shared_ptr<Backbone> backbone_, int64_t num_classes)
    : backbone(register_module("backbone", std::move(backbone_))),
      head(register_module("head", nn::Linear(backbone->feature_dim(), num_classes))) {}

torch::Tensor Classifier::masked(const torch::Tensor& logits, const Batch& batch, const torch::Tensor& masks) const {
  return masks.defined() ? logits + masks.index_select(0, batch.task_ids) : logits;
}

torch::Tensor Classifier::row_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) {
  return torch::nn::functional::cross_entropy(masked(output, batch, masks), batch.targets,
                                              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
}

torch::Tensor Classifier::task_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) {
  if (batch.weights.defined()) return Model::task_loss(output, batch, masks);
  return torch::cross_entropy_loss(masked(output, batch, masks), batch.targets);  // fused mean
}

torch::Tensor Classifier::sample_targets(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks,
                                         at::Generator& gen) {
  torch::NoGradGuard no_grad;
  torch::Tensor probs = torch::softmax(masked(output, batch, masks).to(torch::kFloat64), 1).cpu();
  return torch::multinomial(probs, 1, /*replacement=*/true, gen).view(-1).to(output.device());
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

void initialize(torch::nn::Module& module, const std::string& scheme) {
  if (scheme == "default") return;
  torch::NoGradGuard no_grad;
  for (const auto& item : module.named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor p = item.value();
    const bool is_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
    if (is_bias) p.zero_();
    else if (p.dim() >= 2) torch::nn::init::xavier_uniform_(p);
  }
}

}  // namespace clrun
