// `vit`: timm's VisionTransformer (architecture, parameter names and default initialisation), so
// timm/PILOT/RanPAC weights load by name: patch_embed.proj, cls_token, pos_embed,
// blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, fc_norm. Every Linear is
// clrun::nn::Linear and the patch projection clrun::nn::Conv2d, so taps (MIGU, Fisher) work on it.
// The classification head is the Classifier's (`head`, as timm names it).
#include <cmath>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>

#include "clrun/models/backbone.hpp"
#include "clrun/models/vit.hpp"

namespace clrun {

namespace {

struct VitOptions {
  std::string size = "custom";  ///< tiny | small | base | large (timm's) | custom
  int64_t patch = 16;
  int64_t width = 192;  ///< embed_dim
  int64_t depth = 12;
  int64_t heads = 3;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  std::string pool = "token";  ///< token (class token, then norm) | avg (mean of patch tokens, then fc_norm)
  double dropout = 0;          ///< timm's drop_rate (after pos_embed, attn.proj and mlp)
  double attn_dropout = 0;     ///< timm's attn_drop_rate
  double drop_path = 0;        ///< stochastic depth, linearly increasing over the blocks (timm's drop_path_rate)
  std::string weight_init = "timm";  ///< timm | torch (timm's name; backbone.init loads weights)

  template <class V>
  void fields(V& v) {
    v("size", size, "tiny (192x12, 3 heads), small (384x12, 6), base (768x12, 12), large (1024x24, 16) or custom",
      one_of({"tiny", "small", "base", "large", "custom"}));
    v("patch", patch, "patch size (square); the image size must be a multiple", at_least(1));
    v("width", width, "embedding width (custom size)", at_least(1));
    v("depth", depth, "number of blocks (custom size)", at_least(1));
    v("heads", heads, "attention heads; must divide width (custom size)", at_least(1));
    v("mlp_ratio", mlp_ratio, "MLP hidden width / width", above(0));
    v("qkv_bias", qkv_bias, "bias in the fused qkv projection");
    v("pool", pool, "token: class token after the final norm; avg: mean of patch tokens then fc_norm",
      one_of({"token", "avg"}));
    v("dropout", dropout, "dropout after the position embedding, attention projection and MLP", in_range(0, 1));
    v("attn_dropout", attn_dropout, "dropout on the attention weights", in_range(0, 1));
    v("drop_path", drop_path, "stochastic depth rate of the last block (linear from 0)", in_range(0, 1));
    v("weight_init", weight_init, "timm: trunc-normal(0.02) Linear weights, zero biases, pos_embed trunc-normal(0.02), "
      "cls_token normal(1e-6); torch: PyTorch's layer defaults", one_of({"timm", "torch"}));
  }
  void validate(const ConfigNode& node) const {
    if (size == "custom" && width % heads != 0)
      node.child("heads").fail(std::to_string(heads) + " heads do not divide width " + std::to_string(width));
  }
  /// The architecture after applying `size`.
  VitOptions resolved() const {
    VitOptions o = *this;
    if (size == "tiny") o.width = 192, o.depth = 12, o.heads = 3;
    if (size == "small") o.width = 384, o.depth = 12, o.heads = 6;
    if (size == "base") o.width = 768, o.depth = 12, o.heads = 12;
    if (size == "large") o.width = 1024, o.depth = 24, o.heads = 16;
    return o;
  }
};

/// Per-sample stochastic depth on a residual branch (timm's DropPath).
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training) {
  if (p <= 0 || !training) return x;
  std::vector<int64_t> shape(static_cast<std::size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  torch::Tensor keep = torch::empty(shape, x.options()).bernoulli_(1.0 - p);
  return x * keep / (1.0 - p);
}

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t heads, bool qkv_bias, double attn_drop, double proj_drop)
      : heads_(heads), scale_(1.0 / std::sqrt(static_cast<double>(dim / heads))), attn_drop_(attn_drop),
        proj_drop_(proj_drop) {
    qkv = register_module("qkv", nn::Linear(dim, 3 * dim, qkv_bias));
    proj = register_module("proj", nn::Linear(dim, dim));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t B = x.size(0), N = x.size(1), C = x.size(2);
    torch::Tensor qkv_ = qkv->forward(x).reshape({B, N, 3, heads_, C / heads_}).permute({2, 0, 3, 1, 4});
    torch::Tensor q = qkv_[0], k = qkv_[1], v = qkv_[2];
    torch::Tensor attn = torch::softmax(torch::matmul(q * scale_, k.transpose(-2, -1)), -1);
    attn = torch::dropout(attn, attn_drop_, is_training());
    torch::Tensor out = torch::matmul(attn, v).transpose(1, 2).reshape({B, N, C});
    return torch::dropout(proj->forward(out), proj_drop_, is_training());
  }
  nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t heads_;
  double scale_, attn_drop_, proj_drop_;
};
TORCH_MODULE(Attention);

class MlpBlockImpl : public torch::nn::Module {
 public:
  MlpBlockImpl(int64_t dim, int64_t hidden, double drop) : drop_(drop) {
    fc1 = register_module("fc1", nn::Linear(dim, hidden));
    fc2 = register_module("fc2", nn::Linear(hidden, dim));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::dropout(torch::gelu(fc1->forward(x)), drop_, is_training());  // exact (erf) GELU, as timm
    return torch::dropout(fc2->forward(h), drop_, is_training());
  }
  nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  double drop_;
};
TORCH_MODULE(MlpBlock);

torch::nn::LayerNorm layer_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-6));  // timm's ViT eps
}

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const VitOptions& o, double drop_path_rate) : drop_path_(drop_path_rate) {
    norm1 = register_module("norm1", layer_norm(o.width));
    attn = register_module("attn", Attention(o.width, o.heads, o.qkv_bias, o.attn_dropout, o.dropout));
    norm2 = register_module("norm2", layer_norm(o.width));
    mlp = register_module("mlp", MlpBlock(o.width, static_cast<int64_t>(o.width * o.mlp_ratio), o.dropout));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x + drop_path(attn->forward(norm1->forward(x)), drop_path_, is_training());
    return x + drop_path(mlp->forward(norm2->forward(x)), drop_path_, is_training());
  }
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  MlpBlock mlp{nullptr};

 private:
  double drop_path_;
};
TORCH_MODULE(Block);

class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t dim, int64_t patch) {
    proj = register_module("proj", nn::Conv2d(in_chans, dim, patch, /*stride=*/patch));
  }
  torch::Tensor forward(const torch::Tensor& x) { return proj->forward(x).flatten(2).transpose(1, 2); }
  nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class Vit : public Backbone {
 public:
  Vit(const VitOptions& options, const std::vector<int64_t>& input_shape) : o_(options.resolved()) {
    const int64_t C = input_shape.at(0), H = input_shape.at(1), W = input_shape.at(2);
    if (H % o_.patch != 0 || W % o_.patch != 0)
      throw InputError("backbone.patch: " + std::to_string(H) + "x" + std::to_string(W) +
                       " inputs are not a whole number of " + std::to_string(o_.patch) + "x" +
                       std::to_string(o_.patch) + " patches; resize the inputs or pick another patch size");
    grid_ = {H / o_.patch, W / o_.patch};
    patch_embed = register_module("patch_embed", PatchEmbed(C, o_.width, o_.patch));
    cls_token = register_parameter("cls_token", torch::zeros({1, 1, o_.width}));
    pos_embed = register_parameter("pos_embed", torch::zeros({1, grid_[0] * grid_[1] + 1, o_.width}));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < o_.depth; ++i) {
      double rate = o_.depth > 1 ? o_.drop_path * static_cast<double>(i) / static_cast<double>(o_.depth - 1) : 0.0;
      blocks->push_back(Block(o_, rate));
    }
    if (o_.pool == "token") norm = register_module("norm", layer_norm(o_.width));
    else fc_norm = register_module("fc_norm", layer_norm(o_.width));
    if (o_.weight_init == "timm") timm_init();
  }

  torch::Tensor forward(const torch::Tensor& input) override {
    torch::Tensor x = patch_embed->forward(input);
    x = torch::cat({cls_token.expand({x.size(0), -1, -1}), x}, 1) + pos_embed;
    x = torch::dropout(x, o_.dropout, is_training());
    for (const auto& block : *blocks) x = block->as<BlockImpl>()->forward(x);
    if (o_.pool == "token") return norm->forward(x).select(1, 0);
    return fc_norm->forward(x.narrow(1, 1, x.size(1) - 1).mean(1));
  }
  int64_t feature_dim() const override { return o_.width; }

  PatchEmbed patch_embed{nullptr};
  torch::Tensor cls_token, pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr}, fc_norm{nullptr};

 private:
  /// timm's init_weights(''): trunc_normal(0.02) for pos_embed and every Linear weight (zero
  /// biases), normal(1e-6) for cls_token; the patch projection and norms keep PyTorch's defaults.
  void timm_init() {
    torch::NoGradGuard no_grad;
    trunc_normal_(pos_embed, 0.02);
    cls_token.normal_(0.0, 1e-6);
    for (auto& [name, layer] : nn::linear_layers(*this)) {
      trunc_normal_(layer->weight, 0.02);
      if (layer->bias.defined()) layer->bias.zero_();
    }
  }
  /// N(0, std) truncated to [-2, 2] (absolute bounds, as timm's trunc_normal_ defaults).
  static void trunc_normal_(torch::Tensor& t, double std) {
    const double a = -2.0, b = 2.0;
    auto cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
    const double l = cdf(a / std), u = cdf(b / std);
    t.uniform_(2 * l - 1, 2 * u - 1).erfinv_().mul_(std * std::sqrt(2.0)).clamp_(a, b);
  }

  VitOptions o_;
  std::vector<int64_t> grid_;
};

}  // namespace

torch::Tensor resample_pos_embed(const torch::Tensor& pos_embed, std::vector<int64_t> new_grid, int64_t prefix_tokens) {
  const int64_t old_tokens = pos_embed.size(1) - prefix_tokens;
  const auto old_side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(old_tokens))));
  if (old_side * old_side != old_tokens)
    throw InputError("pos_embed: " + std::to_string(old_tokens) + " patch positions are not a square grid");
  if (old_side == new_grid.at(0) && old_side == new_grid.at(1)) return pos_embed;
  const int64_t D = pos_embed.size(2);
  torch::Tensor prefix = pos_embed.narrow(1, 0, prefix_tokens);
  torch::Tensor grid = pos_embed.narrow(1, prefix_tokens, old_tokens).reshape({1, old_side, old_side, D}).permute({0, 3, 1, 2});
  // timm's resample_abs_pos_embed: bicubic, align_corners=False, antialias off, in float32.
  grid = torch::nn::functional::interpolate(
      grid.to(torch::kFloat32), torch::nn::functional::InterpolateFuncOptions()
                                    .size(new_grid)
                                    .mode(torch::kBicubic)
                                    .align_corners(false));
  grid = grid.permute({0, 2, 3, 1}).reshape({1, new_grid[0] * new_grid[1], D}).to(pos_embed.scalar_type());
  return torch::cat({prefix, grid}, 1);
}

void register_vit(BackboneRegistry& registry) {
  registry.add<VitOptions>("vit", "Vision Transformer with timm's architecture and parameter names",
                           [](const VitOptions& o, std::vector<int64_t> shape) { return std::make_shared<Vit>(o, shape); });
}

}  // namespace clrun
