// Device selection: `auto` picks CUDA when this LibTorch build has it and a GPU is visible.
#pragma once
#include <string>

#include <c10/core/Device.h>

namespace clrun {

/// Resolves "auto" | "cpu" | "cuda" | "cuda:N"; throws InputError naming `key_path`.
c10::Device resolve_device(const std::string& name, const std::string& key_path);

}  // namespace clrun
