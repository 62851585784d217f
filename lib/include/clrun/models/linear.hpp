// clrun's tapped layers. clrun::nn::Linear is the one fully connected layer of every backbone and
// head (y = x W^T + b); clrun::nn::Conv2d the convolution of the conv backbones. Both offer
// training-time taps: observers that see each call's input and output (pre-activation) during a
// forward pass with autograd on, and, if they ask, the gradient of the loss w.r.t. that output
// during backward. MIGU's magnitudes and EWC's per-sample Fisher use them (LoRA adapters will hang
// off Linear). Taps never run under NoGradGuard (evaluation), need no second forward pass and no
// host sync. A layer's output units are the rows (dim 0) of its weight.
//
// A Linear can carry LoRA adapters (Hu et al. 2021): y = x W^T + b + sum_k scale_k B_k(A_k(dropout(x))),
// each adapter a submodule `lora_k` whose A [r, in] and B [out, r] are Linears themselves (so MIGU
// can mask their rank and output units); the layer's taps see the combined output.
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

class TappedLayer;

class Tap {
 public:
  virtual ~Tap() = default;
  /// Called in each forward with autograd enabled; `output` is the layer's output before any activation.
  virtual void on_forward(TappedLayer& /*layer*/, const torch::Tensor& /*input*/, const torch::Tensor& /*output*/) {}
  /// Whether on_output_grad is wanted (it costs a hook per call).
  virtual bool wants_output_grad() const { return false; }
  /// dLoss/doutput of the call whose output was seen by on_forward, during backward.
  virtual void on_output_grad(TappedLayer& /*layer*/, const torch::Tensor& /*grad*/) {}
};

/// What taps see of a layer: its parameters, its output units and where they sit in its output.
class TappedLayer {
 public:
  virtual ~TappedLayer() = default;
  void add_tap(Tap* tap) { taps_.push_back(tap); }
  void remove_tap(Tap* tap);
  virtual const torch::Tensor& weight_param() const = 0;
  virtual const torch::Tensor& bias_param() const = 0;  ///< undefined if none
  /// The output dimension that indexes units: -1 (last) for Linear, 1 (channels) for Conv2d.
  virtual int64_t unit_dim() const = 0;
  int64_t units() const { return weight_param().size(0); }

 protected:
  /// Runs the taps on one call (only with autograd on) and returns `output`.
  torch::Tensor observe(const torch::Tensor& input, torch::Tensor output);

 private:
  std::vector<Tap*> taps_;
};

class LoraImpl;

class LinearImpl : public torch::nn::Cloneable<LinearImpl>, public TappedLayer {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  /// A layer on another module's weight [out, in] (tied embeddings: T5's lm_head on `shared`),
  /// without a bias. The weight is not registered here, so it stays one parameter of the owner.
  explicit LinearImpl(const torch::Tensor& tied_weight);
  void reset() override;
  /// PyTorch's default initialisation (kaiming-uniform(a=sqrt 5) weights, uniform(+-1/sqrt in) bias).
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& input);
  const torch::Tensor& weight_param() const override { return weight; }
  const torch::Tensor& bias_param() const override { return bias; }
  int64_t unit_dim() const override { return -1; }
  /// Registers adapter `lora_{k}` (k = adapters.size()): A kaiming-uniform(a = sqrt 5), B zero.
  std::shared_ptr<LoraImpl> add_adapter(int64_t rank, double alpha, double dropout);
  /// W + sum_k scale_k B_k A_k: the weight with the adapters merged (export).
  torch::Tensor merged_weight() const;

  int64_t in_features, out_features;
  bool with_bias;
  bool tied = false;     ///< the weight belongs to another module
  std::vector<std::shared_ptr<LoraImpl>> adapters;
  torch::Tensor weight;  ///< [out_features, in_features]
  torch::Tensor bias;    ///< [out_features] or undefined
};
TORCH_MODULE(Linear);

/// One LoRA adapter of a Linear: scale * B(A(dropout(x))), scale = alpha / rank.
class LoraImpl : public torch::nn::Module {
 public:
  LoraImpl(int64_t in_features, int64_t out_features, int64_t rank, double alpha, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  Linear A{nullptr}, B{nullptr};  ///< A: [rank, in] (its rows are the rank units), B: [out, rank]
  double scale, dropout;
};

/// 2-d convolution with square kernels, PyTorch's parameter layout, initialisation and names.
class Conv2dImpl : public torch::nn::Cloneable<Conv2dImpl>, public TappedLayer {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1, int64_t padding = 0,
             bool bias = true);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input);
  const torch::Tensor& weight_param() const override { return weight; }
  const torch::Tensor& bias_param() const override { return bias; }
  int64_t unit_dim() const override { return 1; }

  int64_t in_channels, out_channels, kernel_size, stride, padding;
  bool with_bias;
  torch::Tensor weight;  ///< [out_channels, in_channels, k, k]
  torch::Tensor bias;    ///< [out_channels] or undefined
};
TORCH_MODULE(Conv2d);

/// Every clrun Linear in `module`, with its qualified name ("backbone.fc0", "head").
std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> linear_layers(torch::nn::Module& module);
/// Every tapped layer (Linear and Conv2d) in `module`, with its qualified name.
std::vector<std::pair<std::string, std::shared_ptr<TappedLayer>>> tapped_layers(torch::nn::Module& module);

/// Attaches `tap` to `layers` for the guard's lifetime.
class TapGuard {
 public:
  TapGuard(Tap& tap, std::vector<TappedLayer*> layers);
  ~TapGuard();
  TapGuard(const TapGuard&) = delete;
  TapGuard& operator=(const TapGuard&) = delete;

 private:
  Tap& tap_;
  std::vector<TappedLayer*> layers_;
};

}  // namespace clrun::nn
