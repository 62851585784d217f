// Model: what strategies train. The model side owns the forward pass over a Batch, the task loss
// and how targets are sampled from its predictions, so that model-agnostic strategies (EWC, SI,
// replay, A-GEM, MIGU) never touch images or class logits. Classifier (backbone + one linear head
// over every class) is today's model; a seq2seq model will be another.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>

#include "clrun/core/config.hpp"
#include "clrun/data/batch.hpp"
#include "clrun/models/backbone.hpp"
#include "clrun/models/linear.hpp"

namespace clrun {

class Model : public torch::nn::Module {
 public:
  /// The output of a forward pass over `batch.inputs` (class logits [B, C]).
  virtual torch::Tensor forward(const Batch& batch) = 0;
  /// The representation the output is computed from ([B, D] backbone features for a classifier),
  /// for strategies with heads of their own (SoTU's prototype / ridge / RanPAC heads).
  virtual torch::Tensor features(const Batch& batch);
  /// Per-row task loss [B]. `masks` ([num_tasks, C] additive, undefined = none) restricts each
  /// row's logits by its own task id (train.logits: seen | current).
  virtual torch::Tensor row_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) = 0;
  /// Targets drawn from the model's predictive distribution (EWC's expected Fisher).
  virtual torch::Tensor sample_targets(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks,
                                       at::Generator& gen) = 0;
  /// The loss minimised: the mean of row_loss, or sum(batch.weights * row_loss) when the batch
  /// carries weights (replay terms weighted apart from the current rows).
  virtual torch::Tensor task_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks);
  /// Sequence-to-sequence models: greedy answers [B, T] (token ids, 0 after </s>) to the token
  /// batch, at most `max_new_tokens` long. The base throws (classifiers predict by argmax).
  virtual torch::Tensor generate(const Batch& batch, int64_t max_new_tokens);
};

/// Builds a fresh model of the run's architecture on the run's device (teachers, anchors).
using ModelFactory = std::function<std::shared_ptr<Model>()>;

/// Copies every parameter and buffer of `src` into `dst` (same architecture).
void copy_state(const torch::nn::Module& src, torch::nn::Module& dst);

/// A backbone with one linear head over every class of the stream. Task-IL is multi-head by
/// masking this head's logits to the task's classes.
class Classifier : public Model {
 public:
  Classifier(std::shared_ptr<Backbone> backbone, int64_t num_classes);
  torch::Tensor forward(const Batch& batch) override { return logits(batch.inputs); }
  torch::Tensor logits(const torch::Tensor& x) { return head->forward(backbone->forward(x)); }
  torch::Tensor features(const torch::Tensor& x) { return backbone->forward(x); }
  torch::Tensor features(const Batch& batch) override { return backbone->forward(batch.inputs); }
  torch::Tensor row_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) override;
  torch::Tensor task_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) override;
  torch::Tensor sample_targets(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks,
                               at::Generator& gen) override;

  std::shared_ptr<Backbone> backbone;
  nn::Linear head{nullptr};

 private:
  torch::Tensor masked(const torch::Tensor& logits, const Batch& batch, const torch::Tensor& masks) const;
};

/// backbone.init: `default` keeps each layer's own init (PyTorch's, or timm's for vit);
/// `xavier_uniform` redraws Linear and conv weights Xavier-uniform with zero biases (Mammoth's
/// MLPs); `{safetensors: PATH, strict: true}` loads pre-trained weights by the backbone's public
/// names (timm's for vit, torchvision's or PyCIL's for resnet), with the vit position embedding
/// resampled to the input size. The file's head (`head.*`, or the backbone's head_name(): `fc.*`
/// for resnet) is loaded only when its shape matches the run's head (a pre-trained head of
/// another label space is skipped, and logged).
struct BackboneInit {
  std::string scheme = "default";  ///< default | xavier_uniform | safetensors
  std::string path;                ///< the safetensors file
  bool strict = true;              ///< missing, unexpected or mismatched backbone tensors are errors
};
void to_json(nlohmann::json& j, const BackboneInit& init);
template <>
struct Decoder<BackboneInit> {
  static BackboneInit decode(const ConfigNode& node);
};

/// A sequence-to-sequence backbone (token ids in, token ids out: T5). Its forward() gives the mean
/// of the encoder states over non-pad tokens, so feature-based heads work on it too.
class LanguageModel : public Backbone {
 public:
  /// Encoder states [B, L, D] of token ids [B, L] (attention_mask: 1 = token, 0 = padding).
  virtual torch::Tensor encode(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) = 0;
  /// Logits [B, T, V] of the decoder fed `decoder_input_ids` [B, T] over those inputs.
  virtual torch::Tensor logits(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                               const torch::Tensor& decoder_input_ids) = 0;
  /// Teacher-forced logits of batch.targets: the decoder reads them shifted right (start token 0,
  /// ignored positions as padding).
  torch::Tensor logits(const Batch& batch);
  /// Greedy decoding with a key/value cache; see Model::generate.
  virtual torch::Tensor generate(const Batch& batch, int64_t max_new_tokens) = 0;
  /// backbone.init for this model (its own init, or a safetensors file by its public names).
  virtual void initialize(const BackboneInit& init) = 0;
  /// The effective architecture (config.json keys), for metrics.json.
  virtual nlohmann::json describe() const = 0;
};

/// The attention mask of a token batch (extra["attention_mask"], else the non-pad positions).
torch::Tensor attention_mask_of(const Batch& batch);
/// Decoder inputs of targets [B, T]: shifted right after the start token 0, -100 read as pad 0.
torch::Tensor shift_right(const torch::Tensor& targets);

/// The model of text streams: a LanguageModel trained with token cross-entropy.
class Seq2SeqModel : public Model {
 public:
  explicit Seq2SeqModel(std::shared_ptr<LanguageModel> backbone);
  torch::Tensor forward(const Batch& batch) override { return backbone->logits(batch); }
  torch::Tensor features(const Batch& batch) override { return backbone->forward(batch.inputs); }
  /// Mean token cross-entropy of each row over its target tokens (-100 ignored).
  torch::Tensor row_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) override;
  /// Without batch weights, the mean over every target token of the batch (Hugging Face's loss);
  /// with them, sum(weights * row_loss).
  torch::Tensor task_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) override;
  /// A token per target position from the softmax (ignored positions stay -100).
  torch::Tensor sample_targets(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks,
                               at::Generator& gen) override;
  torch::Tensor generate(const Batch& batch, int64_t max_new_tokens) override {
    return backbone->generate(batch, max_new_tokens);
  }

  std::shared_ptr<LanguageModel> backbone;
};

/// Applies `init` to a fresh classifier (its backbone under `backbone.`, its head as `head`).
void initialize(Classifier& model, const BackboneInit& init);

}  // namespace clrun
