// Device selection: `auto` picks CUDA when this LibTorch build has it and a GPU is visible.
#pragma once
#include <string>

#include <c10/core/Device.h>

namespace clrun {

/// Resolves "auto" | "cpu" | "cuda" | "cuda:N"; throws InputError naming `key_path`.
c10::Device resolve_device(const std::string& name, const std::string& key_path);

/// train.precision: bf16 autocast on `device` for the guard's lifetime (matmuls and linears in
/// bf16, reductions and softmax in fp32 as autocast lists them; weights, gradients and optimizer
/// state stay fp32). Inactive when `enabled` is false. Nests; restores the previous state.
class AutocastGuard {
 public:
  AutocastGuard(bool enabled, c10::Device device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false, cuda_ = false, previous_ = false;
};

}  // namespace clrun
