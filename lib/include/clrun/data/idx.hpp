// Reader for the IDX format of the MNIST family (gzip-compressed or plain).
#pragma once
#include <string>

#include <torch/types.h>

namespace clrun {

/// Reads an IDX file of unsigned bytes (type 0x08) into a uint8 tensor of its dimensions.
/// `path` may end in .gz or be plain; throws InputError naming the file on any format problem.
torch::Tensor read_idx(const std::string& path);

/// Writes `t` (uint8, any rank) as IDX; gzip-compressed when `path` ends in .gz. For tests and
/// for converting data sets.
void write_idx(const std::string& path, const torch::Tensor& t);

/// Reads the whole file, gunzipping when it starts with the gzip magic.
std::string read_maybe_gzip(const std::string& path);

}  // namespace clrun
