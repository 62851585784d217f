// Parsing of CIFAR-10/100 binary-version batch files from their bytes (the data sets cifar10 and
// cifar100 that read them are registered by register_cifar in data/cifar.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "clrun/data/dataset.hpp"

namespace clrun {

/// Pixel bytes of one record: 1024 R, then 1024 G, then 1024 B, each plane row-major 32x32.
constexpr int64_t kCifarImageBytes = 3 * 32 * 32;

/// The record layout of one data set's batch files: label bytes, then kCifarImageBytes pixels.
struct CifarFormat {
  std::string dataset;                   ///< "cifar10" or "cifar100", for messages
  std::vector<std::string> label_kinds;  ///< per label byte, in record order: {""} (CIFAR-10) or {"coarse", "fine"}
  std::vector<int64_t> label_classes;    ///< per label byte: its number of classes (values must be below it)
  int label = 0;                         ///< which label byte becomes Split::labels

  int64_t record_bytes() const { return static_cast<int64_t>(label_kinds.size()) + kCifarImageBytes; }
};

CifarFormat cifar10_format();
/// `coarse`: the 20 superclasses (label byte 0) instead of the 100 classes (label byte 1).
CifarFormat cifar100_format(bool coarse);

/// Parses one batch file's bytes into images uint8 [N, 3, 32, 32] and labels int64 [N]. A size
/// that is not a positive multiple of the record size, or any label byte out of its range, is an
/// InputError naming `name` (and the first bad record), raised before any tensor is allocated.
Split parse_cifar_batch(std::string_view bytes, const std::string& name, const CifarFormat& format);

/// Class names from a names file (batches.meta.txt, fine/coarse_label_names.txt): one per line,
/// surrounding whitespace trimmed, blank lines skipped; anything but `expected` names is an
/// InputError naming `name`.
std::vector<std::string> parse_cifar_class_names(std::string_view text, const std::string& name, int64_t expected);

}  // namespace clrun
