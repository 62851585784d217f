// clrun::nn::Linear and its taps.
#include "clrun/models/linear.hpp"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

namespace clrun::nn {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool bias_)
    : in_features(in), out_features(out), with_bias(bias_) {
  reset();
}

void LinearImpl::reset() {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  bias = with_bias ? register_parameter("bias", torch::empty({out_features})) : torch::Tensor();
  reset_parameters();
}

void LinearImpl::reset_parameters() {
  // The same draws, in the same order, as torch::nn::Linear: runs keep their numbers.
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& input) {
  torch::Tensor out = torch::linear(input, weight, bias);
  if (taps_.empty() || !torch::GradMode::is_enabled()) return out;
  for (LinearTap* tap : taps_) {
    tap->on_forward(*this, input, out);
    // The hook sees dLoss/dout even if a later activation works in place on `out`.
    if (tap->wants_output_grad() && out.requires_grad())
      out.register_hook([this, tap](torch::Tensor grad) { tap->on_output_grad(*this, grad); });
  }
  return out;
}

void LinearImpl::remove_tap(LinearTap* tap) { taps_.erase(std::remove(taps_.begin(), taps_.end(), tap), taps_.end()); }

std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> linear_layers(torch::nn::Module& module) {
  std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> out;
  for (const auto& item : module.named_modules("", /*include_self=*/false))
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value())) out.emplace_back(item.key(), linear);
  return out;
}

TapGuard::TapGuard(LinearTap& tap, std::vector<std::shared_ptr<LinearImpl>> layers)
    : tap_(tap), layers_(std::move(layers)) {
  for (auto& l : layers_) l->add_tap(&tap_);
}

TapGuard::~TapGuard() {
  for (auto& l : layers_) l->remove_tap(&tap_);
}

}  // namespace clrun::nn
