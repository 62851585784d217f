// `t5`: Hugging Face's T5ForConditionalGeneration (T5 v1.0 and the gated v1.1 / Flan variant):
// the architecture, the parameter names (so a user's model.safetensors loads as is) and the
// Mesh-TensorFlow initialisation of random models. Every Linear is clrun::nn::Linear (MIGU's taps,
// LoRA adapters), the tied lm_head included (it reads `shared.weight`).
//
// Math (transformers' modeling_t5.py): RMSNorm with the variance in fp32; pre-norm residual
// blocks; attention scores q k^T without 1/sqrt(d_kv), plus a relative position bias (block 0 of
// each stack owns it, every layer of the stack adds it) and an additive mask, softmax in fp32;
// cross-attention without position bias; FFN wo(act(wi x)) or wo(gelu_tanh(wi_0 x) * wi_1 x);
// dropout on the embeddings, the attention weights, inside the FFN, on each sublayer's output and
// after each stack's final norm; tied embeddings scale the decoder output by d_model^-0.5.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <spdlog/spdlog.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include "clrun/core/error.hpp"
#include "clrun/io/safetensors.hpp"
#include "clrun/models/backbone.hpp"
#include "clrun/models/model.hpp"
#include "clrun/models/t5.hpp"

namespace clrun {

namespace F = torch::nn::functional;

// ---- configuration --------------------------------------------------------------------------

namespace {

struct T5Options {
  std::string config;  ///< a Hugging Face config.json; inline keys (non-zero / non-empty) override it
  int64_t d_model = 0, d_ff = 0, d_kv = 0, num_heads = 0, num_layers = 0, num_decoder_layers = 0, vocab_size = 0;
  int64_t relative_attention_num_buckets = 0, relative_attention_max_distance = 0;
  double dropout_rate = -1, layer_norm_epsilon = 0;
  std::string feed_forward_proj;
  std::string tie_word_embeddings;  ///< "" (from config.json, default true) | true | false

  template <class V>
  void fields(V& v) {
    v("config", config, "a Hugging Face config.json (t5-small/base/large, v1.1, Flan); the keys below override it");
    v("d_model", d_model, "hidden width; 0 = config.json's (t5-small: 512)", at_least(0));
    v("d_ff", d_ff, "feed-forward width; 0 = config.json's (2048)", at_least(0));
    v("d_kv", d_kv, "per-head key/value width; 0 = config.json's (64)", at_least(0));
    v("num_heads", num_heads, "attention heads; 0 = config.json's (8)", at_least(0));
    v("num_layers", num_layers, "encoder blocks; 0 = config.json's (6)", at_least(0));
    v("num_decoder_layers", num_decoder_layers, "decoder blocks; 0 = config.json's (else num_layers)", at_least(0));
    v("vocab_size", vocab_size, "embedding rows; 0 = config.json's (32128)", at_least(0));
    v("relative_attention_num_buckets", relative_attention_num_buckets, "position buckets; 0 = config.json's (32)",
      at_least(0));
    v("relative_attention_max_distance", relative_attention_max_distance,
      "distance of the last bucket; 0 = config.json's (128)", at_least(0));
    v("dropout_rate", dropout_rate, "dropout; -1 = config.json's (0.1)", in_range(-1, 1));
    v("layer_norm_epsilon", layer_norm_epsilon, "RMSNorm epsilon; 0 = config.json's (1e-6)", at_least(0));
    v("feed_forward_proj", feed_forward_proj, "relu (v1.0) or gated-gelu (v1.1, Flan); empty = config.json's (relu)",
      one_of({"", "relu", "gated-gelu"}));
    v("tie_word_embeddings", tie_word_embeddings, "lm_head = shared (v1.0); empty = config.json's (true)",
      one_of({"", "true", "false"}));
  }
};

T5Config resolve(const T5Options& o) {
  T5Config c;
  nlohmann::json file = nlohmann::json::object();
  if (!o.config.empty()) {
    std::ifstream in(o.config);
    if (!in) throw InputError("backbone.config: " + o.config + ": no such file (expected a Hugging Face T5 config.json)");
    try {
      file = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw InputError("backbone.config: " + o.config + ": not valid JSON (" + e.what() + ")");
    }
    if (!file.is_object()) throw InputError("backbone.config: " + o.config + ": expected a JSON object");
  }
  auto pick = [&](const char* key, auto inline_value, auto unset, auto& out) {
    using T = std::decay_t<decltype(out)>;
    if (inline_value != unset) {
      out = inline_value;
      return;
    }
    if (!file.contains(key) || file[key].is_null()) return;
    try {
      out = file[key].get<T>();
    } catch (const nlohmann::json::exception&) {
      throw InputError("backbone.config: " + o.config + ": key " + key + " has the wrong type (" + file[key].dump() + ")");
    }
  };
  pick("d_model", o.d_model, int64_t{0}, c.d_model);
  pick("d_ff", o.d_ff, int64_t{0}, c.d_ff);
  pick("d_kv", o.d_kv, int64_t{0}, c.d_kv);
  pick("num_heads", o.num_heads, int64_t{0}, c.num_heads);
  pick("num_layers", o.num_layers, int64_t{0}, c.num_layers);
  c.num_decoder_layers = c.num_layers;
  pick("num_decoder_layers", o.num_decoder_layers, int64_t{0}, c.num_decoder_layers);
  if (o.num_layers > 0 && o.num_decoder_layers == 0 && !file.contains("num_decoder_layers")) c.num_decoder_layers = c.num_layers;
  pick("vocab_size", o.vocab_size, int64_t{0}, c.vocab_size);
  pick("relative_attention_num_buckets", o.relative_attention_num_buckets, int64_t{0}, c.relative_attention_num_buckets);
  pick("relative_attention_max_distance", o.relative_attention_max_distance, int64_t{0}, c.relative_attention_max_distance);
  pick("dropout_rate", o.dropout_rate, -1.0, c.dropout_rate);
  pick("layer_norm_epsilon", o.layer_norm_epsilon, 0.0, c.layer_norm_epsilon);
  pick("feed_forward_proj", o.feed_forward_proj, std::string(), c.feed_forward_proj);
  if (!o.tie_word_embeddings.empty()) c.tie_word_embeddings = o.tie_word_embeddings == "true";
  else if (file.contains("tie_word_embeddings")) c.tie_word_embeddings = file["tie_word_embeddings"].get<bool>();
  if (c.feed_forward_proj != "relu" && c.feed_forward_proj != "gated-gelu")
    throw InputError("backbone.feed_forward_proj: '" + c.feed_forward_proj + "' (from " + o.config +
                     ") is not supported: expected relu or gated-gelu");
  for (auto [name, value] : {std::pair<const char*, int64_t>{"d_model", c.d_model}, {"d_ff", c.d_ff}, {"d_kv", c.d_kv},
                             {"num_heads", c.num_heads}, {"num_layers", c.num_layers},
                             {"num_decoder_layers", c.num_decoder_layers}, {"vocab_size", c.vocab_size},
                             {"relative_attention_num_buckets", c.relative_attention_num_buckets},
                             {"relative_attention_max_distance", c.relative_attention_max_distance}})
    if (value < 1) throw InputError(std::string("backbone.") + name + ": must be at least 1");
  return c;
}

}  // namespace

nlohmann::json T5Config::to_json() const {
  return {{"d_model", d_model}, {"d_ff", d_ff}, {"d_kv", d_kv}, {"num_heads", num_heads}, {"num_layers", num_layers},
          {"num_decoder_layers", num_decoder_layers}, {"vocab_size", vocab_size},
          {"relative_attention_num_buckets", relative_attention_num_buckets},
          {"relative_attention_max_distance", relative_attention_max_distance}, {"dropout_rate", dropout_rate},
          {"layer_norm_epsilon", layer_norm_epsilon}, {"feed_forward_proj", feed_forward_proj},
          {"tie_word_embeddings", tie_word_embeddings}};
}

torch::Tensor t5_position_buckets(const torch::Tensor& relative_position, bool bidirectional, int64_t num_buckets,
                                  int64_t max_distance) {
  torch::Tensor buckets = torch::zeros_like(relative_position);
  torch::Tensor rp = relative_position;
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + rp.gt(0).to(torch::kInt64) * num_buckets;
    rp = rp.abs();
  } else {
    rp = -torch::clamp_max(rp, 0);
  }
  const int64_t max_exact = num_buckets / 2;
  torch::Tensor large =
      max_exact + (torch::log(rp.to(torch::kFloat32) / static_cast<float>(max_exact)) /
                   static_cast<float>(std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact))) *
                   static_cast<float>(num_buckets - max_exact))
                      .to(torch::kInt64);
  large = torch::clamp_max(large, num_buckets - 1);
  return buckets + torch::where(rp.lt(max_exact), rp, large);
}

// ---- layers ---------------------------------------------------------------------------------

namespace {

/// T5LayerNorm: RMS normalisation without mean subtraction or bias.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t d, double eps) : eps_(eps) { weight = register_parameter("weight", torch::ones({d})); }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor variance = x.to(torch::kFloat32).pow(2).mean(-1, true);
    return weight * (x * torch::rsqrt(variance + eps_)).to(weight.scalar_type());
  }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

/// Keys and values of one attention layer for cached decoding: self-attention appends to
/// preallocated [B, H, capacity, d_kv] tensors; cross-attention stores the encoder's once.
struct KvCache {
  torch::Tensor k, v;
  int64_t length = 0;  ///< self-attention: positions filled
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const T5Config& c, bool has_bias) : heads_(c.num_heads), d_kv_(c.d_kv), dropout_(c.dropout_rate) {
    const int64_t inner = c.num_heads * c.d_kv;
    q = register_module("q", nn::Linear(c.d_model, inner, false));
    k = register_module("k", nn::Linear(c.d_model, inner, false));
    v = register_module("v", nn::Linear(c.d_model, inner, false));
    o = register_module("o", nn::Linear(inner, c.d_model, false));
    if (has_bias) relative_attention_bias = register_module("relative_attention_bias",
                                                            torch::nn::Embedding(c.relative_attention_num_buckets, c.num_heads));
  }
  /// [B, L, H*d] -> [B, H, L, d]
  torch::Tensor heads(const torch::Tensor& x) const { return x.view({x.size(0), x.size(1), heads_, d_kv_}).transpose(1, 2); }
  /// `bias` [B or 1, H or 1, Lq, Lk] holds the position bias and the mask. `kv`: the key/value
  /// source (cross-attention: the encoder states); `cache`: append this call's keys and values.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& bias, KvCache* cache = nullptr) {
    torch::Tensor qh = heads(q->forward(x)), kh, vh;
    if (cache && kv.defined() && cache->k.defined()) {  // cross-attention: computed at the first step
      kh = cache->k, vh = cache->v;
    } else {
      kh = heads(k->forward(kv.defined() ? kv : x));
      vh = heads(v->forward(kv.defined() ? kv : x));
      if (cache && kv.defined()) {
        cache->k = kh, cache->v = vh;
      } else if (cache) {
        const int64_t n = kh.size(2);
        cache->k.narrow(2, cache->length, n).copy_(kh);
        cache->v.narrow(2, cache->length, n).copy_(vh);
        cache->length += n;
        kh = cache->k.narrow(2, 0, cache->length);
        vh = cache->v.narrow(2, 0, cache->length);
      }
    }
    torch::Tensor scores = torch::matmul(qh, kh.transpose(-1, -2)) + bias;
    torch::Tensor weights = torch::softmax(scores.to(torch::kFloat32), -1).to(scores.scalar_type());
    if (is_training() && dropout_ > 0) weights = F::dropout(weights, F::DropoutFuncOptions().p(dropout_).training(true));
    torch::Tensor out = torch::matmul(weights, vh).transpose(1, 2).reshape({x.size(0), x.size(1), heads_ * d_kv_});
    return o->forward(out);
  }
  nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
  torch::nn::Embedding relative_attention_bias{nullptr};

 private:
  int64_t heads_, d_kv_;
  double dropout_;
};
TORCH_MODULE(Attention);

torch::Tensor maybe_dropout(const torch::Tensor& x, double p, bool training) {
  return training && p > 0 ? F::dropout(x, F::DropoutFuncOptions().p(p).training(true)) : x;
}

/// layer.N of a block: an attention sublayer (SelfAttention or EncDecAttention) with its norm.
class AttentionLayerImpl : public torch::nn::Module {
 public:
  AttentionLayerImpl(const T5Config& c, const std::string& name, bool has_bias) : dropout_(c.dropout_rate) {
    attention = register_module(name, Attention(c, has_bias));
    layer_norm = register_module("layer_norm", RmsNorm(c.d_model, c.layer_norm_epsilon));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& bias, KvCache* cache) {
    return x + maybe_dropout(attention->forward(layer_norm->forward(x), kv, bias, cache), dropout_, is_training());
  }
  Attention attention{nullptr};
  RmsNorm layer_norm{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(AttentionLayer);

class DenseImpl : public torch::nn::Module {
 public:
  explicit DenseImpl(const T5Config& c) : gated_(c.feed_forward_proj == "gated-gelu"), dropout_(c.dropout_rate) {
    if (gated_) {
      wi_0 = register_module("wi_0", nn::Linear(c.d_model, c.d_ff, false));
      wi_1 = register_module("wi_1", nn::Linear(c.d_model, c.d_ff, false));
    } else {
      wi = register_module("wi", nn::Linear(c.d_model, c.d_ff, false));
    }
    wo = register_module("wo", nn::Linear(c.d_ff, c.d_model, false));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = gated_ ? torch::gelu(wi_0->forward(x), "tanh") * wi_1->forward(x) : torch::relu(wi->forward(x));
    return wo->forward(maybe_dropout(h, dropout_, is_training()));
  }
  nn::Linear wi{nullptr}, wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};

 private:
  bool gated_;
  double dropout_;
};
TORCH_MODULE(Dense);

class FeedForwardLayerImpl : public torch::nn::Module {
 public:
  explicit FeedForwardLayerImpl(const T5Config& c) : dropout_(c.dropout_rate) {
    DenseReluDense = register_module("DenseReluDense", Dense(c));
    layer_norm = register_module("layer_norm", RmsNorm(c.d_model, c.layer_norm_epsilon));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return x + maybe_dropout(DenseReluDense->forward(layer_norm->forward(x)), dropout_, is_training());
  }
  Dense DenseReluDense{nullptr};
  RmsNorm layer_norm{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(FeedForwardLayer);

/// encoder.block.N / decoder.block.N: layer.0 self-attention, (decoder) layer.1 cross-attention, then the FFN.
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const T5Config& c, bool decoder, bool has_bias) {
    self_attention = AttentionLayer(c, "SelfAttention", has_bias);
    if (decoder) cross_attention = AttentionLayer(c, "EncDecAttention", false);
    feed_forward = FeedForwardLayer(c);
    torch::nn::ModuleList layers;
    layers->push_back(self_attention);
    if (decoder) layers->push_back(cross_attention);
    layers->push_back(feed_forward);
    register_module("layer", layers);
  }
  AttentionLayer self_attention{nullptr}, cross_attention{nullptr};
  FeedForwardLayer feed_forward{nullptr};
};
TORCH_MODULE(Block);

class StackImpl : public torch::nn::Module {
 public:
  StackImpl(const T5Config& c, bool decoder) : config_(c), decoder_(decoder) {
    const int64_t n = decoder ? c.num_decoder_layers : c.num_layers;
    torch::nn::ModuleList list;
    for (int64_t i = 0; i < n; ++i) {
      blocks.push_back(Block(c, decoder, i == 0));
      list->push_back(blocks.back());
    }
    register_module("block", list);
    final_layer_norm = register_module("final_layer_norm", RmsNorm(c.d_model, c.layer_norm_epsilon));
  }
  /// Position bias [1, H, Lq, Lk] for queries at positions offset..offset+Lq-1 and keys 0..Lk-1.
  torch::Tensor position_bias(int64_t lq, int64_t lk, int64_t offset, torch::Device device) {
    torch::Tensor ctx = torch::arange(offset, offset + lq, torch::TensorOptions(torch::kInt64).device(device)).unsqueeze(1);
    torch::Tensor mem = torch::arange(lk, torch::TensorOptions(torch::kInt64).device(device)).unsqueeze(0);
    torch::Tensor buckets = t5_position_buckets(mem - ctx, !decoder_, config_.relative_attention_num_buckets,
                                                config_.relative_attention_max_distance);
    auto& table = blocks.at(0)->self_attention->attention->relative_attention_bias;
    return table->forward(buckets).permute({2, 0, 1}).unsqueeze(0);
  }
  /// `self_bias`: position bias + self-attention mask; `cross_bias`: the encoder mask (decoder).
  torch::Tensor forward(torch::Tensor h, const torch::Tensor& self_bias, const torch::Tensor& encoder,
                        const torch::Tensor& cross_bias, std::vector<KvCache>* cache = nullptr) {
    h = maybe_dropout(h, config_.dropout_rate, is_training());
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      Block& b = blocks[i];
      h = b->self_attention->forward(h, {}, self_bias, cache ? &(*cache)[2 * i] : nullptr);
      if (decoder_) h = b->cross_attention->forward(h, encoder, cross_bias, cache ? &(*cache)[2 * i + 1] : nullptr);
      h = b->feed_forward->forward(h);
    }
    return maybe_dropout(final_layer_norm->forward(h), config_.dropout_rate, is_training());
  }
  std::vector<Block> blocks;
  RmsNorm final_layer_norm{nullptr};

 private:
  T5Config config_;
  bool decoder_;
};
TORCH_MODULE(Stack);

/// Additive mask [B, 1, 1, L]: 0 where attended, the dtype's lowest value elsewhere (as transformers).
torch::Tensor padding_bias(const torch::Tensor& attention_mask) {
  const float lowest = std::numeric_limits<float>::lowest();
  return (1.0 - attention_mask.to(torch::kFloat32)).mul(lowest).unsqueeze(1).unsqueeze(1);
}

}  // namespace

// ---- the model ------------------------------------------------------------------------------

class T5 : public LanguageModel {
 public:
  explicit T5(const T5Config& c) : config_(c) {
    shared = register_module("shared", torch::nn::Embedding(c.vocab_size, c.d_model));
    encoder = register_module("encoder", Stack(c, false));
    decoder = register_module("decoder", Stack(c, true));
    lm_head = register_module("lm_head", c.tie_word_embeddings ? nn::Linear(shared->weight)
                                                               : nn::Linear(c.d_model, c.vocab_size, false));
    mesh_tf_init();
  }

  int64_t feature_dim() const override { return config_.d_model; }
  std::string head_name() const override { return "lm_head"; }
  nlohmann::json describe() const override { return config_.to_json(); }

  torch::Tensor encode(const torch::Tensor& ids, const torch::Tensor& mask) override {
    const int64_t L = ids.size(1);
    torch::Tensor bias = encoder->position_bias(L, L, 0, ids.device()) + padding_bias(mask);
    return encoder->forward(shared->forward(ids), bias, {}, {});
  }

  torch::Tensor forward(const torch::Tensor& ids) override {
    torch::Tensor mask = ids.ne(0).to(torch::kFloat32);
    torch::Tensor states = encode(ids, mask);
    return (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, true).clamp_min(1);
  }

  torch::Tensor lm_logits(const torch::Tensor& decoded) {
    return lm_head->forward(config_.tie_word_embeddings ? decoded * std::pow(static_cast<double>(config_.d_model), -0.5)
                                                        : decoded);
  }

  using LanguageModel::logits;
  torch::Tensor logits(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& dec_in) override {
    torch::Tensor encoded = encode(ids, mask);
    const int64_t T = dec_in.size(1);
    torch::Tensor causal = torch::ones({T, T}, torch::TensorOptions(torch::kFloat32).device(dec_in.device())).tril();
    torch::Tensor self_bias = decoder->position_bias(T, T, 0, dec_in.device()) +
                              (1.0 - causal).mul(std::numeric_limits<float>::lowest()).unsqueeze(0).unsqueeze(0);
    torch::Tensor decoded = decoder->forward(shared->forward(dec_in), self_bias, encoded, padding_bias(mask));
    return lm_logits(decoded);
  }

  torch::Tensor generate(const Batch& batch, int64_t max_new_tokens) override {
    torch::NoGradGuard no_grad;
    const torch::Tensor mask = attention_mask_of(batch);
    torch::Tensor encoded = encode(batch.inputs, mask);
    const torch::Tensor cross_bias = padding_bias(mask);
    const int64_t B = batch.inputs.size(0), H = config_.num_heads, D = config_.d_kv;
    const auto opts = encoded.options();
    std::vector<KvCache> cache(2 * decoder->blocks.size());
    for (std::size_t i = 0; i < cache.size(); i += 2) {
      cache[i].k = torch::empty({B, H, max_new_tokens, D}, opts);
      cache[i].v = torch::empty({B, H, max_new_tokens, D}, opts);
    }
    torch::Tensor token = torch::zeros({B, 1}, batch.inputs.options());
    torch::Tensor finished = torch::zeros({B}, torch::TensorOptions(torch::kBool).device(encoded.device()));
    std::vector<torch::Tensor> out;
    for (int64_t step = 0; step < max_new_tokens; ++step) {
      // The new query sees every cached key: only its position bias is needed.
      torch::Tensor self_bias = decoder->position_bias(1, step + 1, step, encoded.device());
      torch::Tensor h = decoder->forward(shared->forward(token), self_bias, encoded, cross_bias, &cache);
      torch::Tensor next = lm_logits(h).select(1, 0).argmax(-1);
      next = next.masked_fill(finished, 0);
      out.push_back(next);
      finished = finished | next.eq(1);
      if (finished.all().item<bool>()) break;
      token = next.unsqueeze(1);
    }
    return torch::stack(out, 1);
  }

  /// Mesh-TensorFlow's init (transformers' _init_weights): shared N(0, 1), q N(0, (d_model d_kv)^-0.5),
  /// k and v N(0, d_model^-0.5), o N(0, (H d_kv)^-0.5), wi/wi_0/wi_1 N(0, d_model^-0.5), wo N(0, d_ff^-0.5),
  /// relative bias N(0, d_model^-0.5), an untied lm_head N(0, 1), norms 1.
  void mesh_tf_init() {
    torch::NoGradGuard no_grad;
    const double dm = static_cast<double>(config_.d_model);
    shared->weight.normal_(0, 1);
    if (!config_.tie_word_embeddings) lm_head->weight.normal_(0, 1);
    for (Stack* stack : {&encoder, &decoder})
      for (Block& b : (*stack)->blocks) {
        for (AttentionLayer layer : {b->self_attention, b->cross_attention}) {
          if (layer.is_empty()) continue;
          Attention& a = layer->attention;
          a->q->weight.normal_(0, std::pow(dm * static_cast<double>(config_.d_kv), -0.5));
          a->k->weight.normal_(0, std::pow(dm, -0.5));
          a->v->weight.normal_(0, std::pow(dm, -0.5));
          a->o->weight.normal_(0, std::pow(static_cast<double>(config_.num_heads * config_.d_kv), -0.5));
          if (!a->relative_attention_bias.is_empty()) a->relative_attention_bias->weight.normal_(0, std::pow(dm, -0.5));
        }
        Dense& d = b->feed_forward->DenseReluDense;
        for (nn::Linear wi : {d->wi, d->wi_0, d->wi_1})
          if (!wi.is_empty()) wi->weight.normal_(0, std::pow(dm, -0.5));
        d->wo->weight.normal_(0, std::pow(static_cast<double>(config_.d_ff), -0.5));
      }
  }

  /// Loads Hugging Face names. `shared.weight` may come under any of its tied names
  /// (encoder/decoder.embed_tokens, and lm_head when tied): the first present is used. A file
  /// with more vocabulary rows than vocab_size gives its first rows (the upstream code resizes
  /// t5's 32128 rows to the tokenizer's 32100).
  void initialize(const BackboneInit& init) override {
    if (init.scheme == "default") return;
    if (init.scheme != "safetensors")
      throw InputError("backbone.init: t5 supports default (Mesh-TensorFlow) or {safetensors: PATH}, not " + init.scheme);
    SafetensorsFile file(init.path);
    std::vector<std::string> tied = {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"};
    if (config_.tie_word_embeddings) tied.push_back("lm_head.weight");
    std::string source;
    for (const auto& n : tied)
      if (source.empty() && file.has(n)) source = n;
    // Vocabulary matrices with extra rows: their first vocab_size rows, copied here.
    std::map<std::string, std::string> first_rows;  // file name -> module name
    auto resized = [&](const std::string& file_name, const std::string& module_name) {
      if (file_name.empty() || !file.has(file_name)) return;
      const auto& shape = file.info(file_name).shape;
      if (shape.size() == 2 && shape[0] > config_.vocab_size && shape[1] == config_.d_model) first_rows[file_name] = module_name;
    };
    resized(source, "shared.weight");
    if (!config_.tie_word_embeddings) resized("lm_head.weight", "lm_head.weight");
    auto rename = [&](const std::string& name) -> std::string {
      if (first_rows.count(name)) return "";
      if (std::find(tied.begin(), tied.end(), name) != tied.end()) return name == source ? "shared.weight" : "";
      return name;
    };
    LoadReport report = load_into(file, *this, /*strict=*/false, rename);
    auto params = named_parameters();
    for (const auto& [file_name, module_name] : first_rows) {
      torch::NoGradGuard no_grad;
      params[module_name].copy_(file.get(file_name).narrow(0, 0, config_.vocab_size));
      report.missing.erase(std::remove(report.missing.begin(), report.missing.end(), module_name), report.missing.end());
      spdlog::info("{}: {} has {} rows; its first {} (vocab_size) are loaded", init.path, file_name,
                   file.info(file_name).shape[0], config_.vocab_size);
    }
    if (!report.ok()) {
      if (init.strict)
        throw InputError("backbone.init: " + init.path + " does not fit this t5: " + report.describe() +
                         "\nhint: check backbone.config / the size keys; strict: false loads what fits");
      spdlog::warn("backbone.init: {}: {}; loaded the rest (strict: false)", init.path, report.describe());
    }
    spdlog::info("{}: {} tensors loaded into t5{}", init.path, report.loaded.size() + first_rows.size(),
                 source.empty() || source == "shared.weight" ? "" : " (shared.weight from " + source + ")");
  }

  torch::nn::Embedding shared{nullptr};
  Stack encoder{nullptr}, decoder{nullptr};
  nn::Linear lm_head{nullptr};

 private:
  T5Config config_;
};

std::shared_ptr<LanguageModel> make_t5(const T5Config& config) { return std::make_shared<T5>(config); }

void register_t5(BackboneRegistry& registry) {
  registry.add<T5Options>("t5",
                          "T5 encoder-decoder (v1.0, or gated v1.1/Flan) with Hugging Face's names; text streams only",
                          [](const T5Options& o, std::vector<int64_t>) { return make_t5(resolve(o)); });
}

}  // namespace clrun
