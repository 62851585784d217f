// Seq2SeqModel: token cross-entropy over a LanguageModel's teacher-forced logits.
#include <torch/torch.h>

#include "clrun/models/model.hpp"

namespace clrun {

torch::Tensor attention_mask_of(const Batch& batch) {
  auto it = batch.extra.find("attention_mask");
  return it != batch.extra.end() ? it->second : batch.inputs.ne(0).to(torch::kInt64);
}

torch::Tensor shift_right(const torch::Tensor& targets) {
  torch::Tensor t = targets.masked_fill(targets.eq(Batch::kIgnoreTarget), 0);
  return torch::cat({torch::zeros({t.size(0), 1}, t.options()), t.narrow(1, 0, t.size(1) - 1)}, 1);
}

torch::Tensor LanguageModel::logits(const Batch& batch) {
  return logits(batch.inputs, attention_mask_of(batch), shift_right(batch.targets));
}

Seq2SeqModel::Seq2SeqModel(std::shared_ptr<LanguageModel> backbone_)
    : backbone(register_module("backbone", std::move(backbone_))) {}

namespace {
/// Token losses [B, T] (0 at ignored positions) and the mask of counted tokens.
std::pair<torch::Tensor, torch::Tensor> token_losses(const torch::Tensor& logits, const torch::Tensor& targets) {
  torch::Tensor flat = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(Batch::kIgnoreTarget));
  return {flat.view(targets.sizes()), targets.ne(Batch::kIgnoreTarget)};
}
}  // namespace

torch::Tensor Seq2SeqModel::row_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor&) {
  auto [loss, counted] = token_losses(output, batch.targets);
  return loss.sum(1) / counted.sum(1).clamp_min(1);
}

torch::Tensor Seq2SeqModel::task_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) {
  if (batch.weights.defined()) return (batch.weights * row_loss(output, batch, masks)).sum();
  auto [loss, counted] = token_losses(output, batch.targets);
  return loss.sum() / counted.sum().clamp_min(1);
}

torch::Tensor Seq2SeqModel::sample_targets(const torch::Tensor& output, const Batch& batch, const torch::Tensor&,
                                           at::Generator& gen) {
  torch::Tensor probs = torch::softmax(output.detach().to(torch::kFloat32), -1).reshape({-1, output.size(-1)});
  torch::Tensor sampled = torch::multinomial(probs, 1, false, gen).view(batch.targets.sizes());
  return sampled.masked_fill(batch.targets.eq(Batch::kIgnoreTarget), Batch::kIgnoreTarget);
}

}  // namespace clrun
