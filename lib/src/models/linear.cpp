// clrun's tapped layers (Linear, Conv2d) and the tap plumbing.
#include "clrun/models/linear.hpp"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

namespace clrun::nn {

namespace {
/// The same draws, in the same order, as torch::nn::Linear / Conv2d: runs keep their numbers.
void default_init(torch::Tensor& weight, torch::Tensor& bias) {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double fan_in = static_cast<double>(weight.numel() / weight.size(0));
    torch::nn::init::uniform_(bias, -1.0 / std::sqrt(fan_in), 1.0 / std::sqrt(fan_in));
  }
}
}  // namespace

void TappedLayer::remove_tap(Tap* tap) { taps_.erase(std::remove(taps_.begin(), taps_.end(), tap), taps_.end()); }

torch::Tensor TappedLayer::observe(const torch::Tensor& input, torch::Tensor out) {
  if (taps_.empty() || !torch::GradMode::is_enabled()) return out;
  for (Tap* tap : taps_) {
    tap->on_forward(*this, input, out);
    // The hook sees dLoss/dout even if a later activation works in place on `out`.
    if (tap->wants_output_grad() && out.requires_grad())
      out.register_hook([this, tap](torch::Tensor grad) { tap->on_output_grad(*this, grad); });
  }
  return out;
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool bias_) : in_features(in), out_features(out), with_bias(bias_) { reset(); }

LinearImpl::LinearImpl(const torch::Tensor& tied_weight)
    : in_features(tied_weight.size(1)), out_features(tied_weight.size(0)), with_bias(false), tied(true), weight(tied_weight) {}

void LinearImpl::reset() {
  if (tied) return;  // clone(): the owner's weight stays shared
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  bias = with_bias ? register_parameter("bias", torch::empty({out_features})) : torch::Tensor();
  reset_parameters();
}

void LinearImpl::reset_parameters() { default_init(weight, bias); }

torch::Tensor LinearImpl::forward(const torch::Tensor& input) {
  torch::Tensor out = torch::linear(input, weight, bias);
  for (auto& adapter : adapters) out = out + adapter->forward(input);
  return observe(input, out);
}

std::shared_ptr<LoraImpl> LinearImpl::add_adapter(int64_t rank, double alpha, double dropout) {
  auto adapter = std::make_shared<LoraImpl>(in_features, out_features, rank, alpha, dropout);
  adapter->to(weight.device(), weight.scalar_type());
  adapters.push_back(register_module("lora_" + std::to_string(adapters.size()), adapter));
  return adapter;
}

torch::Tensor LinearImpl::merged_weight() const {
  torch::NoGradGuard no_grad;
  torch::Tensor w = weight.detach().clone();
  for (const auto& a : adapters) w.add_(torch::matmul(a->B->weight, a->A->weight), a->scale);
  return w;
}

LoraImpl::LoraImpl(int64_t in, int64_t out, int64_t rank, double alpha, double dropout_)
    : scale(alpha / static_cast<double>(rank)), dropout(dropout_) {
  register_buffer("scale", torch::tensor(scale, torch::kFloat64));  // in checkpoints, for export's merge
  A = register_module("A", Linear(in, rank, false));  // PyTorch's default: kaiming-uniform(a = sqrt 5), as PEFT
  B = register_module("B", Linear(rank, out, false));
  torch::NoGradGuard no_grad;
  B->weight.zero_();
}

torch::Tensor LoraImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = is_training() && dropout > 0
                        ? torch::nn::functional::dropout(x, torch::nn::functional::DropoutFuncOptions().p(dropout).training(true))
                        : x;
  return B->forward(A->forward(h)) * scale;
}

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t k, int64_t stride_, int64_t padding_, bool bias_)
    : in_channels(in), out_channels(out), kernel_size(k), stride(stride_), padding(padding_), with_bias(bias_) {
  reset();
}

void Conv2dImpl::reset() {
  weight = register_parameter("weight", torch::empty({out_channels, in_channels, kernel_size, kernel_size}));
  bias = with_bias ? register_parameter("bias", torch::empty({out_channels})) : torch::Tensor();
  default_init(weight, bias);
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& input) {
  return observe(input, torch::conv2d(input, weight, bias, {stride, stride}, {padding, padding}));
}

std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> linear_layers(torch::nn::Module& module) {
  std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> out;
  for (const auto& item : module.named_modules("", /*include_self=*/false))
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value())) out.emplace_back(item.key(), linear);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<TappedLayer>>> tapped_layers(torch::nn::Module& module) {
  std::vector<std::pair<std::string, std::shared_ptr<TappedLayer>>> out;
  for (const auto& item : module.named_modules("", /*include_self=*/false))
    if (auto layer = std::dynamic_pointer_cast<TappedLayer>(item.value())) out.emplace_back(item.key(), layer);
  return out;
}

TapGuard::TapGuard(Tap& tap, std::vector<TappedLayer*> layers) : tap_(tap), layers_(std::move(layers)) {
  for (auto* l : layers_) l->add_tap(&tap_);
}

TapGuard::~TapGuard() {
  for (auto* l : layers_) l->remove_tap(&tap_);
}

}  // namespace clrun::nn
