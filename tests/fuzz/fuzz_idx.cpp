// libFuzzer target: the IDX reader (plain and gzip) and the bounded gunzip, from memory.
// read_idx(path) / read_maybe_gzip(path) are these plus reading the file.
// InputError is expected; anything else is a finding. An input that parses must round-trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <torch/torch.h>

#include "clrun/core/error.hpp"
#include "clrun/data/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    torch::Tensor t = clrun::parse_idx(bytes, "fuzz-idx");
    if (t.dtype() != torch::kUInt8 || t.dim() < 1 || !t.is_contiguous()) std::abort();
  } catch (const clrun::InputError&) {
  }
  try {
    // a small limit, so that the limit itself is exercised
    std::string out = clrun::gunzip(bytes, "fuzz-gz", 1 << 20);
    if (out.size() > (1 << 20)) std::abort();
  } catch (const clrun::InputError&) {
  }
  return 0;
}
