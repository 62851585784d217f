// Device resolution with a config-path error for unusable devices.
#include "clrun/core/device.hpp"

#include <ATen/autocast_mode.h>

#include <torch/cuda.h>

#include "clrun/core/error.hpp"

namespace clrun {

c10::Device resolve_device(const std::string& name, const std::string& key_path) {
  if (name == "auto") return torch::cuda::is_available() ? c10::Device("cuda") : c10::Device("cpu");
  c10::optional<c10::Device> device;
  try {
    device = c10::Device(name);
  } catch (const std::exception&) {
    throw InputError(key_path + ": '" + name + "' is not a device: expected auto, cpu, cuda or cuda:N");
  }
  if (device->is_cuda() && !torch::cuda::is_available())
    throw InputError(key_path + ": '" + name +
                     "' requested but this LibTorch build sees no CUDA device (use auto or cpu)");
  if (!device->is_cuda() && !device->is_cpu())
    throw InputError(key_path + ": '" + name + "' is not supported: expected auto, cpu or cuda");
  return *device;
}

AutocastGuard::AutocastGuard(bool enabled, c10::Device device) : active_(enabled), cuda_(device.is_cuda()) {
  if (!active_) return;
  if (cuda_) {
    previous_ = at::autocast::is_enabled();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
  } else {
    previous_ = at::autocast::is_cpu_enabled();
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();  // casts of the weights made in this pass
  if (cuda_) at::autocast::set_enabled(previous_);
  else at::autocast::set_cpu_enabled(previous_);
}

}  // namespace clrun
