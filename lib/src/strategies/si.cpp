// `si` (Zenke et al. 2017, synaptic intelligence). During training each parameter's path
// integral omega += -g * (theta_after - theta_before) per step, g the gradient the optimizer
// applied (after clipping); at the end of a task Omega += omega / (Delta^2 + xi), Delta the change
// over the task, and the anchor moves to the task's end. Penalty c * sum Omega (theta - theta*)^2.
// `omega: mammoth` uses Mammoth's approximation omega += lr * g^2 instead, and
// `clip_grad_value` clips gradient entries as Mammoth's SI does (1 there).
// theta_before is a copy: in-place optimizer updates would make a bare detach alias the new
// values and every delta 0.
#include <torch/torch.h>

#include "clrun/strategies/strategy.hpp"
#include "clrun/train/optim.hpp"

namespace clrun {

namespace {

struct SiOptions {
  double c = 0.1;
  double xi = 0.1;
  std::string omega = "path_integral";
  double clip_grad_value = 0;

  template <class V>
  void fields(V& v) {
    v("c", c, "penalty strength: c * sum Omega (theta - theta*)^2", at_least(0));
    v("xi", xi, "damping in Omega = omega / (Delta^2 + xi)", above(0));
    v("omega", omega, "path_integral: -g * delta per step (the paper); mammoth: lr * g^2",
      one_of({"path_integral", "mammoth"}));
    v("clip_grad_value", clip_grad_value, "clip each gradient entry to [-v, v] before the step (Mammoth: 1); 0 = off",
      at_least(0));
  }
};

class Si : public Strategy {
 public:
  explicit Si(const SiOptions& o) : o_(o) {}

 protected:
  void on_before_task(TaskContext& ctx) override {
    auto params = ctx.model.parameters();
    if (big_omega_.empty()) {
      for (const auto& p : params) big_omega_.push_back(torch::zeros_like(p).detach());
      anchor_ = snapshot_parameters(ctx.model);
    }
    start_ = snapshot_parameters(ctx.model);
    small_omega_.clear();
    for (const auto& p : params) small_omega_.push_back(torch::zeros_like(p).detach());
  }

  void on_after_backward(StepContext& ctx) override {
    torch::NoGradGuard no_grad;
    auto params = ctx.model.parameters();
    std::vector<torch::Tensor> values;
    before_.resize(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!params[i].grad().defined()) continue;
      if (tasks_done_ > 0) {  // before any task ends Omega is 0
        // Omega (theta - theta*) = Omega theta - (Omega theta*), one fused kernel
        torch::Tensor od = torch::addcmul(neg_omega_anchor_[i], big_omega_[i], params[i]);
        params[i].mutable_grad().add_(od, 2 * o_.c);
        values.push_back(od.view(-1).dot(params[i].view(-1)) - od.view(-1).dot(anchor_[i].view(-1)));  // od . (theta - theta*)
      }
      if (o_.clip_grad_value > 0) params[i].mutable_grad().clamp_(-o_.clip_grad_value, o_.clip_grad_value);
      if (!before_[i].defined()) before_[i] = torch::empty_like(params[i]);
      before_[i].copy_(params[i]);  // a copy: the optimizer updates params in place
    }
    if (!values.empty()) ctx.add_loss("si", o_.c * torch::stack(values).sum());
  }

  void on_after_step(StepContext& ctx) override {
    torch::NoGradGuard no_grad;
    auto params = ctx.model.parameters();
    const double lr = get_lr(ctx.optimizer);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const torch::Tensor& g = params[i].grad();
      if (!g.defined() || !before_[i].defined()) continue;
      if (o_.omega == "mammoth") small_omega_[i].addcmul_(g, g, lr);
      else small_omega_[i].addcmul_(g, before_[i]).addcmul_(g, params[i], -1.0);  // -= g (theta - before)
    }
  }

  void on_after_task(TaskContext& ctx) override {
    if (!ctx.optimizer) return;
    torch::NoGradGuard no_grad;
    auto params = ctx.model.parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      torch::Tensor delta = params[i].detach() - start_[i];
      big_omega_[i] += small_omega_[i] / (delta.square() + o_.xi);
    }
    anchor_ = snapshot_parameters(ctx.model);
    fold_anchor();
    ++tasks_done_;
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    write_tensors(archive, "big_omega", big_omega_);
    write_tensors(archive, "anchor", anchor_);
    archive.write("tasks_done", c10::IValue(tasks_done_));
  }
  void load(torch::serialize::InputArchive& archive) override {
    big_omega_ = read_tensors(archive, "big_omega", env().device);
    anchor_ = read_tensors(archive, "anchor", env().device);
    c10::IValue v;
    archive.read("tasks_done", v);
    tasks_done_ = v.toInt();
    fold_anchor();
  }

 public:
  nlohmann::json describe() const override {
    double total = 0;
    int64_t n = 0;
    for (const auto& o : big_omega_) total += o.sum().item<double>(), n += o.numel();
    return {{"omega", o_.omega}, {"mean_big_omega", n ? total / static_cast<double>(n) : 0.0}};
  }
  /// For tests: the accumulated importance of parameter i.
  const std::vector<torch::Tensor>& big_omega() const { return big_omega_; }
  const std::vector<torch::Tensor>& small_omega() const { return small_omega_; }

 private:
  /// -(Omega theta*), so that the penalty gradient is one fused kernel per parameter.
  void fold_anchor() {
    torch::NoGradGuard no_grad;
    neg_omega_anchor_.clear();
    for (std::size_t i = 0; i < big_omega_.size(); ++i) neg_omega_anchor_.push_back(-(big_omega_[i] * anchor_[i]));
  }

  SiOptions o_;
  std::vector<torch::Tensor> big_omega_, small_omega_, anchor_, start_, before_, neg_omega_anchor_;
  int64_t tasks_done_ = 0;
};

}  // namespace

void register_si(StrategyRegistry& registry) {
  registry.add<SiOptions>("si", "synaptic intelligence: path-integral importance, quadratic penalty",
                          [](const SiOptions& o, uint64_t) { return std::make_shared<Si>(o); });
}

}  // namespace clrun
