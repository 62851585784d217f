// The safetensors format (https://github.com/huggingface/safetensors): reading (memory-mapped,
// header validated before any tensor is allocated), writing (atomic), and loading into modules.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// padded with spaces, then the data, little-endian, C order; offsets count from the end of the
// header. The reader applies the reference implementation's rules: header at most 100 MB, valid
// JSON, known dtypes, shape products without overflow, end - begin = numel * itemsize, and the
// tensors, sorted by offsets, cover the data exactly (no gap, no overlap, nothing after the last).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace clrun {

/// One tensor's header entry.
struct SafetensorsInfo {
  std::string dtype;            ///< as in the file: "F32", "BF16", "I64", "BOOL", ...
  std::vector<int64_t> shape;   ///< empty for a 0-d tensor
  std::uint64_t begin = 0;      ///< byte offsets in the data section, [begin, end)
  std::uint64_t end = 0;
};

/// A safetensors file, memory-mapped read-only (read with pread where mmap fails). Opening it
/// reads and validates the whole header; every problem is an InputError naming the file, the
/// tensor and what was expected. Tensor data are read only by get(). The file must not be
/// truncated while open (a mapped read past the end would be SIGBUS); clrun's writers replace
/// files by rename, which never does that.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const;
  /// Tensor names in file order: by data offset (the order write_safetensors was given).
  const std::vector<std::string>& names() const;
  bool has(const std::string& name) const;
  /// InputError naming the file when there is no such tensor.
  const SafetensorsInfo& info(const std::string& name) const;
  /// The "__metadata__" entry (empty when absent).
  const std::map<std::string, std::string>& metadata() const;

  /// A new CPU tensor (contiguous, owning its memory) with the tensor's data. Floating tensors
  /// (F16, BF16, F32, F64) are converted to `as` when `as` is floating (by torch, so exactly as
  /// `tensor.to(dtype)` in PyTorch); integer and BOOL tensors keep their type unless `as` is an
  /// integer or bool type, which they are then converted to. A floating tensor asked for as an
  /// integer type, or a dtype torch lacks (U16, U32, U64, F8_*), is an InputError.
  torch::Tensor get(const std::string& name, torch::ScalarType as = torch::kFloat32) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// For tests: false makes SafetensorsFile read with pread, as it does where mmap fails.
void set_safetensors_mmap(bool enabled);

/// Writes `tensors` (any device, any strides; stored contiguous and little-endian, in the given
/// order) and `metadata` as a safetensors file, atomically (temp file, fsync, rename): the
/// header is compact JSON (tensors in the given order, "__metadata__" first when not empty)
/// padded with spaces to a multiple of 8 bytes, as the reference writes it. A duplicate name or
/// "__metadata__", an undefined tensor or a dtype safetensors lacks (complex, quantized) is a WriteError,
/// as is a failed write; the previous version of the file is kept.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// What load_into found: names are the module's (after renaming), each list sorted.
struct LoadReport {
  struct Mismatch {
    std::string name;
    std::vector<int64_t> file_shape, module_shape;
  };
  std::vector<std::string> loaded;      ///< copied into the module
  std::vector<std::string> missing;     ///< in the module, not in the file
  std::vector<std::string> unexpected;  ///< in the file, not in the module
  std::vector<Mismatch> mismatched;     ///< in both, with different shapes (not copied)
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// "2 missing from the file (...); 1 with other shapes (...)": up to 5 names of each kind.
  std::string describe() const;
};

/// Copies the file's tensors into `module`'s named_parameters() and named_buffers() of the same
/// name (without recording gradients), converted to each one's dtype and device. `rename` maps a
/// file name to a module name ("" skips that tensor: neither loaded nor unexpected). Everything
/// is checked before anything is copied: with `strict`, any missing, unexpected or mismatched
/// name is an InputError listing them (and nothing is copied); without, the matching tensors
/// are copied and the rest reported. A floating tensor for an integer buffer, or two file names
/// renamed to one, is an InputError either way.
LoadReport load_into(const SafetensorsFile& file, torch::nn::Module& module, bool strict,
                     const std::function<std::string(const std::string&)>& rename = nullptr);

}  // namespace clrun
