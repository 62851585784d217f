// Batch: the named tensors of one training or evaluation step. Strategies and the trainer pass
// batches around without knowing what the inputs are (images, or token ids); only the model side
// reads `inputs` and `targets`. Token batches: inputs int64 [B, L] source ids padded with 0,
// extra["attention_mask"] int64 [B, L], targets int64 [B, T] target ids padded with -100.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

namespace clrun {

struct Batch {
  static constexpr int64_t kIgnoreTarget = -100;  ///< target padding (Hugging Face's ignore index)
  torch::Tensor inputs;    ///< model inputs (normalised images [B, C, H, W], or token ids [B, L])
  torch::Tensor targets;   ///< int64 [B] label ids, or target token ids [B, T]
  torch::Tensor task_ids;  ///< int64 [B]: the task each row belongs to (per-row logit masks)
  torch::Tensor index;     ///< int64 [B]: rows of the stream's training split (undefined for memory rows)
  torch::Tensor weights;   ///< float [B] per-row loss weights; undefined = plain mean over rows
  std::map<std::string, torch::Tensor> extra;  ///< anything else (attention masks, stored logits, ...)

  int64_t size() const { return targets.defined() ? targets.size(0) : 0; }
  /// Rows [begin, end) of every defined field, as views (no copy).
  Batch rows(int64_t begin, int64_t end) const;
  /// The first `n` rows.
  Batch head(int64_t n) const { return rows(0, n); }
  /// The rows at `positions` of every defined field.
  Batch select(const torch::Tensor& positions) const;
  /// Rows of `parts` one after the other (token fields of different lengths right-padded to the
  /// longest: targets with -100, others with 0). A field is kept only if every part defines it, except
  /// `weights`: a part without weights gets 1/size per row there (its plain mean), and `index`
  /// (memory rows have none) becomes -1.
  static Batch cat(const std::vector<Batch>& parts);
};

}  // namespace clrun
