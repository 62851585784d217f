// T5 (transformers' T5ForConditionalGeneration): its configuration, its relative position
// buckets and a builder. The `t5` backbone (lib/src/models/t5.cpp) is the LanguageModel of text
// streams; parameter names are Hugging Face's (shared.weight, encoder.block.0.layer.0.SelfAttention.q.weight, ...).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "clrun/models/model.hpp"

namespace clrun {

/// The keys of a Hugging Face T5 config.json (defaults: t5-small).
struct T5Config {
  int64_t d_model = 512, d_ff = 2048, d_kv = 64, num_heads = 8, num_layers = 6, num_decoder_layers = 6;
  int64_t vocab_size = 32128, relative_attention_num_buckets = 32, relative_attention_max_distance = 128;
  double dropout_rate = 0.1, layer_norm_epsilon = 1e-6;
  std::string feed_forward_proj = "relu";  ///< relu (v1.0) | gated-gelu (v1.1, Flan)
  bool tie_word_embeddings = true;
  nlohmann::json to_json() const;
};

/// Bucket of each relative position (key - query): bidirectional (encoder) or causal (decoder),
/// exact below num_buckets/4 (resp. /2), logarithmic up to max_distance, capped at the last bucket.
torch::Tensor t5_position_buckets(const torch::Tensor& relative_position, bool bidirectional, int64_t num_buckets,
                                  int64_t max_distance);

/// A T5 with `config`, Mesh-TensorFlow-initialised.
std::shared_ptr<LanguageModel> make_t5(const T5Config& config);

}  // namespace clrun
