// sgd / adam / adamw with PyTorch's parameter names and defaults.
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "clrun/train/optim.hpp"

namespace clrun {

namespace {

struct SgdOptions {
  double lr = 0.01;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;

  template <class V>
  void fields(V& v) {
    v("lr", lr, "learning rate", above(0));
    v("momentum", momentum, "momentum factor", in_range(0, 1));
    v("dampening", dampening, "dampening for momentum", in_range(0, 1));
    v("weight_decay", weight_decay, "L2 penalty added to the gradient", at_least(0));
    v("nesterov", nesterov, "Nesterov momentum");
  }
  void validate(const ConfigNode& node) const {
    if (nesterov && (momentum <= 0 || dampening != 0))
      node.child("nesterov").fail("Nesterov momentum needs momentum > 0 and dampening 0");
  }
};

/// Adam and AdamW share their parameters; only the default weight decay differs (as in PyTorch).
template <int DefaultDecayPermille>
struct AdamOptions {
  double lr = 0.001;
  std::vector<double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = DefaultDecayPermille / 1000.0;
  bool amsgrad = false;

  template <class V>
  void fields(V& v) {
    v("lr", lr, "learning rate", above(0));
    v("betas", betas, "coefficients of the running averages of the gradient and its square", in_range(0, 1));
    v("eps", eps, "term added to the denominator", above(0));
    v("weight_decay", weight_decay, "weight decay (L2 for adam, decoupled for adamw)", at_least(0));
    v("amsgrad", amsgrad, "use the AMSGrad variant");
  }
  void validate(const ConfigNode& node) const {
    if (betas.size() != 2) node.child("betas").fail("expected two values [beta1, beta2]");
  }
};

template <class TorchOptions, class O>
TorchOptions adam_like(const O& o) {
  return TorchOptions(o.lr).betas({o.betas[0], o.betas[1]}).eps(o.eps).weight_decay(o.weight_decay).amsgrad(o.amsgrad);
}

}  // namespace

void register_optimizers(OptimizerRegistry& registry) {
  registry.add<SgdOptions>("sgd", "stochastic gradient descent with optional (Nesterov) momentum",
                           [](const SgdOptions& o, std::vector<torch::optim::OptimizerParamGroup> params) {
                             return std::make_shared<torch::optim::SGD>(
                                 params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).dampening(o.dampening)
                                             .weight_decay(o.weight_decay).nesterov(o.nesterov));
                           });
  registry.add<AdamOptions<0>>("adam", "Adam (L2 weight decay)",
                               [](const AdamOptions<0>& o, std::vector<torch::optim::OptimizerParamGroup> params) {
                                 return std::make_shared<torch::optim::Adam>(params, adam_like<torch::optim::AdamOptions>(o));
                               });
  registry.add<AdamOptions<10>>("adamw", "AdamW (decoupled weight decay, default 0.01)",
                                [](const AdamOptions<10>& o, std::vector<torch::optim::OptimizerParamGroup> params) {
                                  return std::make_shared<torch::optim::AdamW>(params, adam_like<torch::optim::AdamWOptions>(o));
                                });
}

double get_lr(const torch::optim::Optimizer& optimizer) {
  return optimizer.param_groups().at(0).options().get_lr();
}

}  // namespace clrun
