// Fisher estimators: batched per-sample squares through the Linear taps, a per-sample loop for
// the rest, and the minibatch estimator.
#include "clrun/strategies/fisher.hpp"

#include <map>
#include <set>

#include <torch/torch.h>

#include "clrun/models/linear.hpp"

namespace clrun {

namespace {

/// Puts the model in the Fisher pass's mode and back.
class ModeGuard {
 public:
  ModeGuard(Model& model, bool train) : model_(model), was_(model.is_training()) { model_.train(train); }
  ~ModeGuard() { model_.train(was_); }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  Model& model_;
  bool was_;
};

/// Restores requires_grad flags changed for the pass.
class RequiresGradGuard {
 public:
  explicit RequiresGradGuard(std::vector<torch::Tensor> params) : params_(std::move(params)) {
    for (auto& p : params_) flags_.push_back(p.requires_grad());
  }
  ~RequiresGradGuard() {
    for (std::size_t i = 0; i < params_.size(); ++i) params_[i].requires_grad_(flags_[i]);
  }
  RequiresGradGuard(const RequiresGradGuard&) = delete;
  RequiresGradGuard& operator=(const RequiresGradGuard&) = delete;

 private:
  std::vector<torch::Tensor> params_;
  std::vector<bool> flags_;
};

/// Accumulates per-sample squared gradients of Linear weights and biases from the layer's input
/// and output gradient. Backward visits a layer's calls in reverse, so inputs are a stack.
class SquaredGradTap : public nn::Tap {
 public:
  std::map<nn::TappedLayer*, std::vector<torch::Tensor>> inputs;
  std::map<nn::TappedLayer*, std::pair<torch::Tensor, torch::Tensor>> sums;  ///< weight, bias (Linear layers only)
  bool active = true;    ///< off while the per-sample loop runs its own passes
  torch::Tensor weights;  ///< [B] per-sample weights of the current batch, or undefined

  void on_forward(nn::TappedLayer& layer, const torch::Tensor& input, const torch::Tensor&) override {
    if (active) inputs[&layer].push_back(input.detach());
  }
  bool wants_output_grad() const override { return active; }
  void on_output_grad(nn::TappedLayer& layer, const torch::Tensor& grad) override {
    if (!active) return;
    torch::NoGradGuard no_grad;
    auto& stack = inputs[&layer];
    torch::Tensor x = stack.back();
    stack.pop_back();
    auto& [w, b] = sums[&layer];
    if (!w.defined()) {
      w = torch::zeros_like(layer.weight_param());
      if (layer.bias_param().defined()) b = torch::zeros_like(layer.bias_param());
    }
    if (grad.dim() == 2) {
      torch::Tensor g2 = weights.defined() ? grad.square() * weights.unsqueeze(1) : grad.square();
      w.addmm_(g2.t(), x.square());
      if (b.defined()) b.add_(g2.sum(0));
      return;
    }
    // Several positions per sample (sequences): a sample's gradient sums over its positions, so
    // it is formed per sample before squaring, in chunks to bound memory.
    const int64_t rows = grad.size(0);
    torch::Tensor g3 = grad.reshape({rows, -1, grad.size(-1)}), x3 = x.reshape({rows, -1, x.size(-1)});
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 26) / std::max<int64_t>(1, w.numel()));
    for (int64_t s = 0; s < rows; s += chunk) {
      torch::Tensor gs = g3.slice(0, s, s + chunk), xs = x3.slice(0, s, s + chunk);
      torch::Tensor ws = weights.defined() ? weights.slice(0, s, s + chunk) : torch::ones({gs.size(0)}, gs.options());
      w.add_((torch::bmm(gs.transpose(1, 2), xs).square() * ws.view({-1, 1, 1})).sum(0));
      if (b.defined()) b.add_((gs.sum(1).square() * ws.view({-1, 1})).sum(0));
    }
  }
};

std::vector<torch::Tensor> zeros_for_trainable(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) out.push_back(p.requires_grad() ? torch::zeros_like(p) : torch::Tensor());
  return out;
}

/// Targets of the Fisher pass: the labels, or draws from the model's predictive distribution.
Batch with_targets(TaskContext& ctx, const FisherOptions& o, const torch::Tensor& output, Batch b, at::Generator& gen) {
  if (o.fisher == "expected") b.targets = ctx.model.sample_targets(output, b, ctx.loss.masks, gen);
  return b;
}

/// p(y|x) per row with the pass's logit masks (fisher_weighting: probability), else undefined.
torch::Tensor sample_weights(TaskContext& ctx, const FisherOptions& o, const torch::Tensor& output, const Batch& b) {
  if (o.fisher_weighting != "probability") return {};
  torch::NoGradGuard no_grad;
  return ctx.model.row_loss(output.detach(), b, ctx.loss.masks).neg().exp();
}

/// Adds the squared per-sample gradients of `params` (those flagged in `use`) over the rows of b,
/// each times weights[row] if defined.
void accumulate_per_sample_loop(TaskContext& ctx, const Batch& b, const std::vector<torch::Tensor>& params,
                                const std::vector<bool>& use, std::vector<torch::Tensor>& fisher,
                                const torch::Tensor& weights) {
  std::vector<torch::Tensor> wrt;
  std::vector<std::size_t> where;
  for (std::size_t i = 0; i < params.size(); ++i)
    if (use[i]) wrt.push_back(params[i]), where.push_back(i);
  if (wrt.empty()) return;
  for (int64_t r = 0; r < b.size(); ++r) {
    Batch one = b.select(torch::tensor({r}, b.targets.options()));
    torch::Tensor loss = ctx.model.row_loss(ctx.model.forward(one), one, ctx.loss.masks).sum();
    auto grads = torch::autograd::grad({loss}, wrt, {}, false, false, /*allow_unused=*/true);
    torch::NoGradGuard no_grad;
    const double w = weights.defined() ? weights[r].item<double>() : 1.0;
    for (std::size_t k = 0; k < grads.size(); ++k)
      if (grads[k].defined()) fisher[where[k]].add_(grads[k].square(), w);
  }
}

int64_t fisher_rows(TaskContext& ctx, const FisherOptions& o) {
  const int64_t n = ctx.stream.tasks.at(ctx.task).train_rows.size(0);
  return o.fisher_samples > 0 ? std::min(o.fisher_samples, n) : n;
}

}  // namespace

std::vector<torch::Tensor> estimate_fisher(TaskContext& ctx, const FisherOptions& o, at::Generator& gen) {
  ModeGuard mode(ctx.model, o.fisher_mode == "train");
  std::vector<torch::Tensor> params = ctx.model.parameters();
  std::vector<torch::Tensor> fisher = zeros_for_trainable(params);
  const int64_t n = fisher_rows(ctx, o);

  if (o.fisher == "empirical_batch") {
    std::vector<torch::Tensor> wrt;
    for (const auto& p : params)
      if (p.requires_grad()) wrt.push_back(p);
    int64_t batches = 0;
    ctx.for_each_train_batch(ctx.task, o.fisher_batch_size, n, [&](const Batch& b) {
      torch::Tensor loss = ctx.loss(ctx.model, ctx.model.forward(b), b);
      auto grads = torch::autograd::grad({loss}, wrt, {}, false, false, /*allow_unused=*/true);
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0, k = 0; i < params.size(); ++i)
        if (params[i].requires_grad()) {
          if (grads[k].defined()) fisher[i].add_(grads[k].square());
          ++k;
        }
      ++batches;
    });
    for (auto& f : fisher)
      if (f.defined()) f.div_(static_cast<double>(std::max<int64_t>(1, batches)));
    return fisher;
  }

  // Per-sample estimators: Linear weights and biases through the taps, the rest per sample.
  std::map<const void*, std::pair<nn::TappedLayer*, bool>> covered;  // param -> (layer, is weight)
  std::vector<nn::TappedLayer*> layers;
  for (auto& [name, layer] : nn::linear_layers(ctx.model)) {
    if (!layer->weight.requires_grad()) continue;
    layers.push_back(layer.get());
    covered[layer->weight.unsafeGetTensorImpl()] = {layer.get(), true};
    if (layer->bias.defined() && layer->bias.requires_grad()) covered[layer->bias.unsafeGetTensorImpl()] = {layer.get(), false};
  }
  std::vector<bool> loop_over(params.size(), false);
  for (std::size_t i = 0; i < params.size(); ++i)
    loop_over[i] = params[i].requires_grad() && !covered.count(params[i].unsafeGetTensorImpl());

  SquaredGradTap tap;
  {
    RequiresGradGuard restore(params);
    nn::TapGuard attach(tap, layers);
    ctx.for_each_train_batch(ctx.task, o.fisher_batch_size, n, [&](const Batch& batch) {
      // No parameter needs a gradient in this pass: the inputs carry the graph, so backward
      // computes output gradients only, and the taps square them per sample.
      for (auto& p : params) p.requires_grad_(false);
      Batch b = batch;
      b.inputs = b.inputs.detach().requires_grad_(true);
      torch::Tensor out = ctx.model.forward(b);
      b = with_targets(ctx, o, out, b, gen);
      tap.weights = sample_weights(ctx, o, out, b);
      ctx.model.row_loss(out, b, ctx.loss.masks).sum().backward();
      for (std::size_t i = 0; i < params.size(); ++i) params[i].requires_grad_(loop_over[i]);
      b.inputs = b.inputs.detach();
      tap.active = false;
      accumulate_per_sample_loop(ctx, b, params, loop_over, fisher, tap.weights);
      tap.active = true;
    });
  }
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto it = covered.find(params[i].unsafeGetTensorImpl());
    if (it != covered.end()) {
      auto& [w, b] = tap.sums[it->second.first];
      const torch::Tensor& sum = it->second.second ? w : b;
      if (sum.defined()) fisher[i].copy_(sum);
    }
    if (fisher[i].defined()) fisher[i].div_(static_cast<double>(std::max<int64_t>(1, n)));
  }
  return fisher;
}

std::vector<torch::Tensor> estimate_fisher_per_sample_loop(TaskContext& ctx, const FisherOptions& o, at::Generator& gen) {
  ModeGuard mode(ctx.model, o.fisher_mode == "train");
  std::vector<torch::Tensor> params = ctx.model.parameters();
  std::vector<torch::Tensor> fisher = zeros_for_trainable(params);
  std::vector<bool> all(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) all[i] = params[i].requires_grad();
  const int64_t n = fisher_rows(ctx, o);
  ctx.for_each_train_batch(ctx.task, o.fisher_batch_size, n, [&](const Batch& batch) {
    Batch b = batch;
    torch::Tensor weights;
    {
      torch::NoGradGuard no_grad;
      torch::Tensor out = ctx.model.forward(b);
      b = with_targets(ctx, o, out, b, gen);
      weights = sample_weights(ctx, o, out, b);
    }
    accumulate_per_sample_loop(ctx, b, params, all, fisher, weights);
  });
  for (auto& f : fisher)
    if (f.defined()) f.div_(static_cast<double>(std::max<int64_t>(1, n)));
  return fisher;
}

}  // namespace clrun
