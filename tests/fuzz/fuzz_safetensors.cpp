// libFuzzer target: the safetensors reader, from a file (it memory-maps one, so the input is
// written to a temp file, one path per process), mmap and pread paths. InputError is expected;
// anything else is a finding. A file that opens must read every tensor the same both ways, and
// what it holds, written again with write_safetensors, must read back to the same bytes.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <torch/torch.h>

#include "clrun/core/error.hpp"
#include "clrun/io/safetensors.hpp"

namespace {

std::string temp_path(const char* suffix) {
  return (std::filesystem::temp_directory_path() / ("fuzz_safetensors." + std::to_string(::getpid()) + suffix)).string();
}

/// The file's floating dtypes read as stored; integer types are kept by get() anyway.
torch::ScalarType stored_float(const std::string& dtype) {
  static const std::map<std::string, torch::ScalarType> floats = {
      {"F16", torch::kHalf}, {"BF16", torch::kBFloat16}, {"F32", torch::kFloat}, {"F64", torch::kDouble}};
  auto it = floats.find(dtype);
  return it == floats.end() ? torch::kFloat : it->second;
}

bool same_bytes(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() &&
         (a.numel() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), static_cast<std::size_t>(a.numel()) * a.element_size()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string in_path = temp_path(".in"), out_path = temp_path(".out");
  {
    std::ofstream out(in_path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::map<std::string, std::string> metadata;
  try {
    clrun::set_safetensors_mmap(true);
    clrun::SafetensorsFile mapped(in_path);
    clrun::set_safetensors_mmap(false);
    clrun::SafetensorsFile read(in_path);
    clrun::set_safetensors_mmap(true);
    if (mapped.names() != read.names() || mapped.metadata() != read.metadata()) std::abort();
    metadata = mapped.metadata();
    for (const std::string& name : mapped.names()) {
      const clrun::SafetensorsInfo& info = mapped.info(name);
      if (!mapped.has(name) || info.end < info.begin) std::abort();
      try {
        torch::Tensor t = mapped.get(name, stored_float(info.dtype));
        if (!same_bytes(t, read.get(name, stored_float(info.dtype))) || t.sizes().vec() != info.shape) std::abort();
        mapped.get(name);  // as F32
        tensors.emplace_back(name, t);
      } catch (const clrun::InputError&) {  // a dtype torch lacks (U16, ...)
      }
    }
  } catch (const clrun::InputError&) {
    clrun::set_safetensors_mmap(true);
    return 0;
  }
  clrun::write_safetensors(out_path, tensors, metadata);
  clrun::SafetensorsFile again(out_path);
  if (again.names().size() != tensors.size() || again.metadata() != metadata) std::abort();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    if (again.names()[i] != name || !same_bytes(again.get(name, t.scalar_type()), t)) std::abort();
  }
  return 0;
}
