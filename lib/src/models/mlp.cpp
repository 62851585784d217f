// `mlp`: flatten, then Linear + activation (+ dropout) per hidden layer.
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/modules/container/modulelist.h>

#include "clrun/models/backbone.hpp"

namespace clrun {

namespace {

struct MlpOptions {
  std::vector<int64_t> hidden = {400, 400};  ///< widths of the hidden layers
  std::string activation = "relu";
  double dropout = 0;

  template <class V>
  void fields(V& v) {
    v("hidden", hidden, "hidden layer widths; the last is the feature size", at_least(1));
    v("activation", activation, "activation after each hidden layer", one_of({"relu", "tanh", "gelu"}));
    v("dropout", dropout, "dropout probability after each activation", in_range(0, 1));
  }
  void validate(const ConfigNode& node) const {
    if (hidden.empty()) node.child("hidden").fail("needs at least one hidden layer");
  }
};

class Mlp : public Backbone {
 public:
  Mlp(const MlpOptions& o, const std::vector<int64_t>& input_shape)
      : options_(o), activation_(o.activation == "relu" ? Activation::relu : o.activation == "tanh" ? Activation::tanh : Activation::gelu) {
    int64_t in = 1;
    for (int64_t d : input_shape) in *= d;
    for (std::size_t i = 0; i < o.hidden.size(); ++i) {
      layers_.push_back(register_module("fc" + std::to_string(i), nn::Linear(in, o.hidden[i])));
      in = o.hidden[i];
    }
  }
  torch::Tensor forward(const torch::Tensor& input) override {
    namespace F = torch::nn::functional;
    torch::Tensor x = input.flatten(1);
    for (auto& layer : layers_) {
      x = layer->forward(x);
      switch (activation_) {
        case Activation::relu: x.relu_(); break;  // in place: autograd does not need the Linear output
        case Activation::tanh: x = torch::tanh(x); break;
        case Activation::gelu: x = torch::gelu(x); break;
      }
      if (options_.dropout > 0) x = F::dropout(x, F::DropoutFuncOptions().p(options_.dropout).training(is_training()));
    }
    return x;
  }
  int64_t feature_dim() const override { return options_.hidden.back(); }

 private:
  enum class Activation { relu, tanh, gelu };
  MlpOptions options_;
  Activation activation_;
  std::vector<nn::Linear> layers_;
};

}  // namespace

void register_mlp(BackboneRegistry& registry) {
  registry.add<MlpOptions>("mlp", "multi-layer perceptron on flattened inputs",
                           [](const MlpOptions& o, std::vector<int64_t> shape) {
                             return std::make_shared<Mlp>(o, shape);
                           });
}

}  // namespace clrun
