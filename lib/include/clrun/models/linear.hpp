// clrun::nn::Linear: the one fully connected layer of every backbone and head. Besides
// y = x W^T + b it offers training-time taps: observers that see each call's input and output
// (pre-activation) during a forward pass with autograd on, and, if they ask, the gradient of the
// loss w.r.t. that output during backward. MIGU's magnitudes and EWC's per-sample Fisher use them
// (LoRA adapters will hang off the same layer). Taps never run under NoGradGuard (evaluation),
// need no second forward pass and no host sync.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace clrun::nn {

class LinearImpl;

class LinearTap {
 public:
  virtual ~LinearTap() = default;
  /// Called in each forward with autograd enabled; `output` is y before any activation.
  virtual void on_forward(LinearImpl& /*layer*/, const torch::Tensor& /*input*/, const torch::Tensor& /*output*/) {}
  /// Whether on_output_grad is wanted (it costs a hook per call).
  virtual bool wants_output_grad() const { return false; }
  /// dLoss/dy of the call whose output was seen by on_forward, during backward.
  virtual void on_output_grad(LinearImpl& /*layer*/, const torch::Tensor& /*grad*/) {}
};

class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  void reset() override;
  /// PyTorch's default initialisation (kaiming-uniform(a=sqrt 5) weights, uniform(+-1/sqrt in) bias).
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& input);

  void add_tap(LinearTap* tap) { taps_.push_back(tap); }
  void remove_tap(LinearTap* tap);

  int64_t in_features, out_features;
  bool with_bias;
  torch::Tensor weight;  ///< [out_features, in_features]
  torch::Tensor bias;    ///< [out_features] or undefined

 private:
  std::vector<LinearTap*> taps_;
};
TORCH_MODULE(Linear);

/// Every clrun Linear in `module`, with its qualified name ("backbone.fc0", "head").
std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> linear_layers(torch::nn::Module& module);

/// Attaches `tap` to `layers` for the guard's lifetime.
class TapGuard {
 public:
  TapGuard(LinearTap& tap, std::vector<std::shared_ptr<LinearImpl>> layers);
  ~TapGuard();
  TapGuard(const TapGuard&) = delete;
  TapGuard& operator=(const TapGuard&) = delete;

 private:
  LinearTap& tap_;
  std::vector<std::shared_ptr<LinearImpl>> layers_;
};

}  // namespace clrun::nn
