// Reader for the IDX format of the MNIST family (gzip-compressed or plain).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include <torch/types.h>

namespace clrun {

/// The most data an IDX file may hold, and a gzip stream may inflate to: 16 GiB. A header or a
/// stream that promises more is an InputError, raised before anything of that size is allocated.
constexpr std::uint64_t kMaxIdxBytes = std::uint64_t(1) << 34;

/// Reads an IDX file of unsigned bytes (type 0x08) into a uint8 tensor of its dimensions.
/// `path` may end in .gz or be plain; throws InputError naming the file on any format problem.
torch::Tensor read_idx(const std::string& path);

/// The same from a file's bytes (plain, or gzip when they start with the gzip magic); `name`
/// names the data in messages.
torch::Tensor parse_idx(std::string_view bytes, const std::string& name);

/// Writes `t` (uint8, any rank) as IDX; gzip-compressed when `path` ends in .gz. For tests and
/// for converting data sets.
void write_idx(const std::string& path, const torch::Tensor& t);

/// Reads the whole file, gunzipping when it starts with the gzip magic. A file, or inflated
/// data, of more than `max_bytes` is an InputError.
std::string read_maybe_gzip(const std::string& path, std::uint64_t max_bytes = kMaxIdxBytes);

/// Inflates gzip data (every member of a concatenated stream); InputError naming `name` when it
/// is corrupt, truncated or inflates to more than `max_bytes`.
std::string gunzip(std::string_view gz, const std::string& name, std::uint64_t max_bytes = kMaxIdxBytes);

}  // namespace clrun
