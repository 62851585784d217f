// Models in and out of clrun: a run's checkpointed model as a safetensors file with the
// backbone's public names (timm's for vit, torchvision's for resnet), and a model applied to the
// tensors of a safetensors file (features and logits), for users and for parity checks.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace clrun {

/// The model tensors (parameters and buffers) of a clrun checkpoint, by their names in the
/// Classifier ("backbone.blocks.0.attn.qkv.weight", "head.weight"), in archive order.
std::vector<std::pair<std::string, torch::Tensor>> checkpoint_model_tensors(const std::string& checkpoint);

/// Public names: the backbone's own ("blocks.0.attn.qkv.weight") and its head as `head_name`
/// ("head" for timm, "fc" for torchvision), as the reference model of the architecture names them.
std::vector<std::pair<std::string, torch::Tensor>> public_names(std::vector<std::pair<std::string, torch::Tensor>> tensors,
                                                                const std::string& head_name = "head");

/// LoRA adapters folded into the weights they adapt: X.weight += scale * B A for every
/// X.lora_k.{A,B}.weight (scale: X.lora_k.scale), and the adapter tensors dropped.
std::vector<std::pair<std::string, torch::Tensor>> merge_adapters(std::vector<std::pair<std::string, torch::Tensor>> tensors);

/// The checkpoint of `run_dir` after task `task` (0-based; empty: the newest), or an InputError
/// saying which checkpoints exist.
std::string run_checkpoint(const std::string& run_dir, std::optional<int> task);

/// `clrun export`: writes the model of `run_dir`'s checkpoint (for SoTU: the merged model; LoRA
/// adapters merged into their layers) to `out` with public names (Hugging Face's for t5) and
/// metadata naming the run, the task and the backbone config.
/// Returns the number of tensors written.
std::size_t export_run(const std::string& run_dir, std::optional<int> task, const std::string& out);

/// `clrun forward`: the model of a config (weights from its backbone.init) or of a run directory
/// (its checkpoint) in eval mode, applied to the tensor `input_name` of `inputs` ([B, C, H, W],
/// fed to the backbone as is: normalise as the model expects); writes `features` [B, D] and
/// `logits` [B, classes] to `out`. A sequence-to-sequence model (t5) reads `input_ids`,
/// `attention_mask` (optional) and `labels` or `decoder_input_ids`, and writes `encoder_states`,
/// `logits` and (with labels) `loss`, as transformers' T5ForConditionalGeneration. `num_classes` sizes the head of a config's model (0: from the
/// init file's `head.weight`, else the data set's classes).
void forward_file(const std::string& config_or_run, const std::vector<std::string>& sets, const std::string& inputs,
                  const std::string& input_name, const std::string& out, int64_t num_classes, std::optional<int> task);

/// `clrun generate`: greedy answers (`generated` [B, T], 0 after </s>) of a sequence-to-sequence
/// model (config or run directory) to `input_ids` (and `attention_mask`) of `inputs`.
void generate_file(const std::string& config_or_run, const std::vector<std::string>& sets, const std::string& inputs,
                   const std::string& out, int64_t max_new_tokens, std::optional<int> task);

}  // namespace clrun
