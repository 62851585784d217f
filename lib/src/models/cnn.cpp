// `cnn`: a small convolutional net for 28x28-sized inputs: [conv3x3 + ReLU + maxpool2] per
// entry of `channels`, then one hidden Linear layer (the features).
#include <torch/nn/functional/pooling.h>

#include "clrun/models/backbone.hpp"

namespace clrun {

namespace {

struct CnnOptions {
  std::vector<int64_t> channels = {32, 64};  ///< output channels of each conv block
  int64_t hidden = 256;                      ///< feature size

  template <class V>
  void fields(V& v) {
    v("channels", channels, "output channels per conv block (each halves H and W)", at_least(1));
    v("hidden", hidden, "width of the hidden Linear layer (the feature size)", at_least(1));
  }
  void validate(const ConfigNode& node) const {
    if (channels.empty()) node.child("channels").fail("needs at least one conv block");
  }
};

class Cnn : public Backbone {
 public:
  Cnn(const CnnOptions& o, const std::vector<int64_t>& input_shape) : hidden_(o.hidden) {
    int64_t c = input_shape.at(0), h = input_shape.at(1), w = input_shape.at(2);
    for (std::size_t i = 0; i < o.channels.size(); ++i) {
      convs_.push_back(register_module(
          "conv" + std::to_string(i),
          nn::Conv2d(c, o.channels[i], /*kernel_size=*/3, /*stride=*/1, /*padding=*/1)));
      c = o.channels[i];
      h /= 2;
      w /= 2;
    }
    if (h < 1 || w < 1)
      throw InputError("backbone.channels: " + std::to_string(o.channels.size()) +
                       " pooling blocks shrink the input below 1x1");
    fc_ = register_module("fc", nn::Linear(c * h * w, o.hidden));
  }
  torch::Tensor forward(const torch::Tensor& input) override {
    torch::Tensor x = input;
    for (auto& conv : convs_) x = torch::max_pool2d(torch::relu(conv->forward(x)), /*kernel_size=*/2);
    return torch::relu(fc_->forward(x.flatten(1)));
  }
  int64_t feature_dim() const override { return hidden_; }

 private:
  int64_t hidden_;
  std::vector<nn::Conv2d> convs_;
  nn::Linear fc_{nullptr};
};

}  // namespace

void register_cnn(BackboneRegistry& registry) {
  registry.add<CnnOptions>("cnn", "small conv net (conv3x3-ReLU-maxpool blocks + Linear) for 28x28 inputs",
                           [](const CnnOptions& o, std::vector<int64_t> shape) {
                             return std::make_shared<Cnn>(o, shape);
                           });
}

}  // namespace clrun
