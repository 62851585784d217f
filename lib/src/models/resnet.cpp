// `resnet`: the residual networks of the CL literature, with the parameter names of the code they
// come from, so that their weights load by name through backbone.init:
//   resnet18_cifar  the CIFAR ResNet-18 of Mammoth and PyCIL (3x3 stride-1 stem, no max-pool,
//                   BasicBlocks [2,2,2,2], widths nf*[1,2,4,8], features 8*nf) under torchvision's
//                   names, as PyCIL's convs/resnet.py keeps them (Mammoth calls `downsample` `shortcut`)
//   resnet32_cifar  PyCIL's resnet32 (convs/cifar_resnet.py: 3 stages of 5 BasicBlocks, widths
//                   nf*[1,2,4] with nf = 16, features 4*nf) and its names (conv_1_3x3, bn_1,
//                   stage_N.M.{conv_a,bn_a,conv_b,bn_b}); its shortcut is PyCIL's DownsampleA, the
//                   parameter-free "option A" of the ResNet paper: subsample by 2 and pad the new
//                   channels with zeros. PyCIL pools with AvgPool2d(8), i.e. globally on 32x32 inputs;
//                   here the pooling is global for any input size.
//   resnet18, resnet50  torchvision's ResNet (7x7 stride-2 stem + 3x3 max-pool, BasicBlock /
//                   Bottleneck with the stride on the 3x3 conv, as torchvision's "v1.5") and its
//                   state_dict names: conv1, bn1, layerN.M.{conv1,bn1,conv2,bn2[,conv3,bn3]},
//                   layerN.0.downsample.{0,1}; features 512 / 2048.
// torchvision's and PyCIL's `fc` is the Classifier's `head` (head_name() = "fc"): a file's fc.*
// loads into it when it fits the run's classes, and `clrun export` writes it as fc.*. BatchNorm
// running statistics are buffers and load with the parameters.
// Convolutions are clrun::nn::Conv2d (taps for MIGU / Fisher); BatchNorm is torch's, with
// torchvision's eps 1e-5 and momentum 0.1; initialisation is torchvision's (kaiming-normal fan_out
// convs, BatchNorm weight 1 and bias 0, optionally zero_init_residual), which is also PyCIL's.
//
// BatchNorm in continual learning (`bn`): with `train`, BatchNorm normalises by batch statistics
// in training and by running statistics in evaluation, and the running statistics track the
// current task's data only. After a few tasks they describe the last task, not the old ones, so
// old-task accuracy falls even where the weights would still serve (a part of "forgetting" that
// no weight-space method such as EWC, SI or SoTU's masks can prevent, since the statistics are not
// parameters), and the statistics of a pre-trained backbone are overwritten by the first task.
// `frozen` keeps every BatchNorm layer in evaluation mode: it normalises with its running
// statistics, which never change, while its affine weight and bias stay trainable. The backbone
// is then a function of its parameters alone, identical in training and evaluation and
// independent of the batch composition (replay mixes, batch size 1). It is meant for pre-trained
// weights: fresh statistics (mean 0, variance 1) normalise nothing, so a ResNet trained from
// scratch with them is unnormalised and needs a far smaller learning rate
// (configs/finetune_resnet_split_fmnist.yaml with bn: frozen stays at chance at lr 0.05 and
// learns at 0.005).
#include <array>
#include <stdexcept>

#include <torch/nn/init.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include "clrun/models/backbone.hpp"

namespace clrun {

namespace {

struct ResnetOptions {
  std::string variant = "resnet18_cifar";  ///< resnet18_cifar | resnet32_cifar | resnet18 | resnet50
  int64_t width = 0;                       ///< nf of the CIFAR variants; 0 = theirs (64 / 16)
  std::string bn = "train";                ///< train | frozen
  bool zero_init_residual = false;         ///< torchvision's: the last BatchNorm of each block starts at 0

  template <class V>
  void fields(V& v) {
    v("variant", variant,
      "resnet18_cifar (Mammoth/PyCIL: 3x3 stem, no max-pool, features 8*width), resnet32_cifar (PyCIL's: "
      "3x5 BasicBlocks, zero-padded shortcuts, features 4*width), resnet18 / resnet50 (torchvision's, "
      "features 512 / 2048)",
      one_of({"resnet18_cifar", "resnet32_cifar", "resnet18", "resnet50"}));
    v("width", width, "channels of the first stage of the CIFAR variants (nf); 0 = 64 for resnet18_cifar, "
      "16 for resnet32_cifar", at_least(0));
    v("bn", bn, "train: BatchNorm uses batch statistics in training and updates its running statistics; "
      "frozen: BatchNorm always uses its running statistics, which never change (affine weights still train)",
      one_of({"train", "frozen"}));
    v("zero_init_residual", zero_init_residual, "initialise the last BatchNorm weight of every block to 0 "
      "(torchvision's zero_init_residual)");
  }
  void validate(const ConfigNode& node) const {
    if (width != 0 && !cifar())
      node.child("width").fail("applies to resnet18_cifar and resnet32_cifar; " + variant +
                               " has torchvision's fixed widths");
  }
  bool cifar() const { return variant == "resnet18_cifar" || variant == "resnet32_cifar"; }
  int64_t nf() const {
    if (width > 0) return width;
    return variant == "resnet32_cifar" ? 16 : 64;
  }
};

torch::nn::BatchNorm2d batch_norm(int64_t channels) {
  return torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(channels).eps(1e-5).momentum(0.1));  // torchvision's
}

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel_size, int64_t stride) {
  return nn::Conv2d(in, out, kernel_size, stride, /*padding=*/kernel_size / 2, /*bias=*/false);
}

/// A residual block: forward and the BatchNorm that ends its residual branch (zero_init_residual).
class ResidualBlock : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual torch::nn::BatchNorm2d& last_bn() = 0;
};

/// How a block's shortcut changes shape: torchvision's 1x1 conv + BatchNorm (`downsample.0/1`), or
/// PyCIL's DownsampleA (subsample by 2, zero channels appended; no parameters).
enum class Shortcut { projection, zero_pad };

/// Two 3x3 convs. `names` are the four layers' names: torchvision's {conv1, bn1, conv2, bn2} or
/// PyCIL's {conv_a, bn_a, conv_b, bn_b}.
class BasicBlock : public ResidualBlock {
 public:
  BasicBlock(int64_t in, int64_t planes, int64_t stride, Shortcut shortcut, const std::array<const char*, 4>& names)
      : zero_pad_(shortcut == Shortcut::zero_pad && (stride != 1 || in != planes)) {
    conv1_ = register_module(names[0], conv(in, planes, /*kernel_size=*/3, stride));
    bn1_ = register_module(names[1], batch_norm(planes));
    conv2_ = register_module(names[2], conv(planes, planes, /*kernel_size=*/3, /*stride=*/1));
    bn2_ = register_module(names[3], batch_norm(planes));
    if (zero_pad_ && (stride != 2 || planes != 2 * in))
      throw std::logic_error("zero-padded shortcuts halve the size and double the channels");
    if (shortcut == Shortcut::projection && (stride != 1 || in != planes))
      downsample_ = register_module("downsample", torch::nn::Sequential(conv(in, planes, /*kernel_size=*/1, stride),
                                                                        batch_norm(planes)));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    torch::Tensor out = bn1_->forward(conv1_->forward(x)).relu_();
    out = bn2_->forward(conv2_->forward(out));
    return out.add_(shortcut(x)).relu_();
  }
  torch::nn::BatchNorm2d& last_bn() override { return bn2_; }

 private:
  torch::Tensor shortcut(const torch::Tensor& x) {
    if (downsample_) return downsample_->forward(x);
    if (!zero_pad_) return x;
    torch::Tensor sub = x.slice(2, 0, c10::nullopt, 2).slice(3, 0, c10::nullopt, 2);
    return torch::cat({sub, torch::zeros_like(sub)}, 1);
  }

  bool zero_pad_;
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};

/// torchvision's Bottleneck: 1x1 (planes), 3x3 with the stride, 1x1 (4 * planes).
class Bottleneck : public ResidualBlock {
 public:
  static constexpr int64_t expansion = 4;
  Bottleneck(int64_t in, int64_t planes, int64_t stride) {
    conv1_ = register_module("conv1", conv(in, planes, /*kernel_size=*/1, /*stride=*/1));
    bn1_ = register_module("bn1", batch_norm(planes));
    conv2_ = register_module("conv2", conv(planes, planes, /*kernel_size=*/3, stride));
    bn2_ = register_module("bn2", batch_norm(planes));
    conv3_ = register_module("conv3", conv(planes, planes * expansion, /*kernel_size=*/1, /*stride=*/1));
    bn3_ = register_module("bn3", batch_norm(planes * expansion));
    if (stride != 1 || in != planes * expansion)
      downsample_ = register_module(
          "downsample",
          torch::nn::Sequential(conv(in, planes * expansion, /*kernel_size=*/1, stride),
                                batch_norm(planes * expansion)));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    torch::Tensor out = bn1_->forward(conv1_->forward(x)).relu_();
    out = bn2_->forward(conv2_->forward(out)).relu_();
    out = bn3_->forward(conv3_->forward(out));
    return out.add_(downsample_ ? downsample_->forward(x) : x).relu_();
  }
  torch::nn::BatchNorm2d& last_bn() override { return bn3_; }

 private:
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};

/// One variant's layout.
struct Layout {
  bool imagenet_stem;                 ///< 7x7 stride-2 conv + max-pool (torchvision), else 3x3 stride 1
  const char* stem_conv;              ///< stem names
  const char* stem_bn;
  const char* stage_prefix;           ///< "layer" (layer1, ...) or "stage_" (stage_1, ...)
  std::vector<int64_t> blocks;        ///< blocks per stage
  std::vector<int64_t> planes;        ///< planes per stage (before expansion)
  bool bottleneck;
  Shortcut shortcut;
  std::array<const char*, 4> basic_names;
};

Layout layout(const ResnetOptions& o) {
  const int64_t nf = o.nf();
  const std::array<const char*, 4> torchvision_names = {"conv1", "bn1", "conv2", "bn2"};
  if (o.variant == "resnet32_cifar")
    return {false, "conv_1_3x3", "bn_1", "stage_", {5, 5, 5}, {nf, 2 * nf, 4 * nf}, false, Shortcut::zero_pad,
            {"conv_a", "bn_a", "conv_b", "bn_b"}};
  if (o.variant == "resnet18_cifar")
    return {false, "conv1", "bn1", "layer", {2, 2, 2, 2}, {nf, 2 * nf, 4 * nf, 8 * nf}, false,
            Shortcut::projection, torchvision_names};
  const bool r50 = o.variant == "resnet50";
  return {true, "conv1", "bn1", "layer", r50 ? std::vector<int64_t>{3, 4, 6, 3} : std::vector<int64_t>{2, 2, 2, 2},
          {64, 128, 256, 512}, r50, Shortcut::projection, torchvision_names};
}

class Resnet : public Backbone {
 public:
  Resnet(const ResnetOptions& o, const std::vector<int64_t>& input_shape) : frozen_bn_(o.bn == "frozen") {
    const Layout l = layout(o);
    const int64_t stem_width = l.planes.front();
    imagenet_stem_ = l.imagenet_stem;
    const int64_t stem_kernel = imagenet_stem_ ? 7 : 3, stem_stride = imagenet_stem_ ? 2 : 1;
    stem_conv_ = register_module(l.stem_conv, conv(input_shape.at(0), stem_width, stem_kernel, stem_stride));
    stem_bn_ = register_module(l.stem_bn, batch_norm(stem_width));
    int64_t in = stem_width;
    for (std::size_t s = 0; s < l.blocks.size(); ++s) {
      auto stage = register_module(l.stage_prefix + std::to_string(s + 1), torch::nn::ModuleList());
      for (int64_t b = 0; b < l.blocks[s]; ++b) {
        const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
        std::shared_ptr<ResidualBlock> block;
        if (l.bottleneck) block = std::make_shared<Bottleneck>(in, l.planes[s], stride);
        else block = std::make_shared<BasicBlock>(in, l.planes[s], stride, l.shortcut, l.basic_names);
        stage->push_back(block);
        blocks_.push_back(block);
        in = l.planes[s] * (l.bottleneck ? Bottleneck::expansion : 1);
      }
    }
    feature_dim_ = in;
    init(o.zero_init_residual);
    train(is_training());  // apply `bn: frozen`
  }

  torch::Tensor forward(const torch::Tensor& input) override {
    torch::Tensor x = stem_bn_->forward(stem_conv_->forward(input)).relu_();
    if (imagenet_stem_) x = torch::max_pool2d(x, /*kernel_size=*/3, /*stride=*/2, /*padding=*/1);
    for (auto& block : blocks_) x = block->forward(x);
    return x.mean({2, 3});  // global average pooling
  }
  int64_t feature_dim() const override { return feature_dim_; }
  std::string head_name() const override { return "fc"; }

  /// With `bn: frozen` every BatchNorm stays in evaluation mode (running statistics, no updates).
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    if (!frozen_bn_) return;
    for (const auto& m : modules(/*include_self=*/false))
      if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) bn->eval();
  }

 private:
  /// torchvision's: kaiming-normal (fan_out, relu) conv weights, BatchNorm weight 1 and bias 0.
  void init(bool zero_init_residual) {
    torch::NoGradGuard no_grad;
    for (const auto& m : modules(/*include_self=*/false)) {
      if (auto c = std::dynamic_pointer_cast<nn::Conv2dImpl>(m))
        torch::nn::init::kaiming_normal_(c->weight, /*a=*/0, torch::kFanOut, torch::kReLU);
      else if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) {
        bn->weight.fill_(1);
        bn->bias.zero_();
      }
    }
    if (zero_init_residual)
      for (auto& block : blocks_) block->last_bn()->weight.zero_();
  }

  bool frozen_bn_, imagenet_stem_ = false;
  int64_t feature_dim_ = 0;
  nn::Conv2d stem_conv_{nullptr};
  torch::nn::BatchNorm2d stem_bn_{nullptr};
  std::vector<std::shared_ptr<ResidualBlock>> blocks_;
};

}  // namespace

void register_resnet(BackboneRegistry& registry) {
  registry.add<ResnetOptions>(
      "resnet", "ResNet: the CIFAR ResNet-18/32 of Mammoth and PyCIL, torchvision's ResNet-18/50 (names included)",
      [](const ResnetOptions& o, std::vector<int64_t> shape) { return std::make_shared<Resnet>(o, shape); });
}

}  // namespace clrun
