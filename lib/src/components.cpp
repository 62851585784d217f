// The one place where components are registered.
#include "clrun/components.hpp"

namespace clrun {

namespace {
Registries make_registries() {
  Registries r;
  register_mnist(r.datasets);
  register_cifar(r.datasets);
  register_image_folder(r.datasets);
  register_text_benchmark(r.datasets);
  register_split(r.streams);
  register_permuted(r.streams);
  register_rotated(r.streams);
  register_sequence(r.streams);
  register_mlp(r.backbones);
  register_cnn(r.backbones);
  register_vit(r.backbones);
  register_resnet(r.backbones);
  register_t5(r.backbones);
  register_finetune(r.strategies);
  register_joint(r.strategies);
  register_cumulative(r.strategies);
  register_ewc(r.strategies);
  register_si(r.strategies);
  register_lwf(r.strategies);
  register_replay(r.strategies);
  register_agem(r.strategies);
  register_migu(r.strategies);
  register_sotu(r.strategies);
  register_lora(r.strategies);
  register_optimizers(r.optimizers);
  register_schedulers(r.schedulers);
  return r;
}
}  // namespace

const Registries& registries() {
  static const Registries r = make_registries();
  return r;
}

}  // namespace clrun
