// libFuzzer target: the CIFAR-10/100 binary-version batch parser and the class-names parser,
// from memory. The first byte picks the format (cifar10, cifar100 fine, cifar100 coarse); the
// rest is one batch file's bytes, and also a names file's text.
// InputError is expected; anything else is a finding. A batch that parses must be consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <torch/torch.h>

#include "clrun/core/error.hpp"
#include "clrun/data/cifar.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int which = data[0] % 3;
  const clrun::CifarFormat format = which == 0 ? clrun::cifar10_format() : clrun::cifar100_format(which == 2);
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    clrun::Split s = clrun::parse_cifar_batch(bytes, "fuzz-cifar", format);
    const int64_t n = s.size();
    const int64_t classes = format.label_classes.at(format.label);
    if (n < 1 || n * format.record_bytes() != static_cast<int64_t>(bytes.size())) std::abort();
    if (s.images.sizes() != std::vector<int64_t>{n, 3, 32, 32} || s.images.dtype() != torch::kUInt8 ||
        !s.images.is_contiguous() || s.labels.dtype() != torch::kInt64)
      std::abort();
    if (s.labels.min().item<int64_t>() < 0 || s.labels.max().item<int64_t>() >= classes) std::abort();
    // the last record's last pixel is the input's last byte
    if (s.images[n - 1][2][31][31].item<uint8_t>() != static_cast<uint8_t>(bytes.back())) std::abort();
  } catch (const clrun::InputError&) {
  }
  try {
    const int64_t expected = format.label_classes.at(format.label);
    if (static_cast<int64_t>(clrun::parse_cifar_class_names(bytes, "fuzz-names", expected).size()) != expected)
      std::abort();
  } catch (const clrun::InputError&) {
  }
  return 0;
}
