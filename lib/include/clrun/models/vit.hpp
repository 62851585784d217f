// Vision Transformer helpers shared by weight loading and tests.
#pragma once
#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace clrun {

/// timm's resample_abs_pos_embed: the patch-position part of `pos_embed` [1, prefix + S*S, D]
/// resized bicubically to `new_grid` (rows, cols); the `prefix_tokens` (class token) rows kept.
torch::Tensor resample_pos_embed(const torch::Tensor& pos_embed, std::vector<int64_t> new_grid,
                                 int64_t prefix_tokens = 1);

}  // namespace clrun
