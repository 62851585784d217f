// `agem` (Chaudhry et al. 2019, averaged GEM): a reference gradient on a memory draw; when the
// step's gradient g points against it (g . g_ref < 0), g is projected onto the half-space
// g . g_ref >= 0: g <- g - (g . g_ref / g_ref . g_ref) g_ref. The projection is done on the
// device without a branch (the coefficient is clamped at 0), so no host sync per step. The memory
// is filled during training by the same rule as replay (reservoir by default).
#include <torch/torch.h>

#include "clrun/strategies/memory.hpp"
#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {

using AgemOptions = MemoryOptions;

class Agem : public Strategy {
 public:
  explicit Agem(const AgemOptions& o) : o_(o), memory_(o.memory_size, memory_policy(o.policy)) {}
  nlohmann::json describe() const override { return {{"memory", memory_.describe()}}; }

 protected:
  void on_before_backward(StepContext& ctx) override {
    reference_.clear();
    if (memory_.empty()) return;
    params_.clear();
    for (const auto& p : ctx.model.parameters())
      if (p.requires_grad()) params_.push_back(p);
    Batch mem = memory_.sample(ctx.stream, o_.replay_batch_size > 0 ? o_.replay_batch_size : ctx.global_current.size(), rng());
    const World* world = env().world;
    if (!world) {
      torch::Tensor loss = ctx.task_loss(ctx.model.forward(mem), mem);
      reference_ = torch::autograd::grad({loss}, params_, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                         /*create_graph=*/false, /*allow_unused=*/true);
      return;
    }
    // Data parallel: each rank the gradient of its shard of the same draw, weighted by its loss
    // units, summed over the ranks: the reference gradient of the whole draw.
    const double units = static_cast<double>(ctx.stream.loss_units(mem));
    mem = own_shard(mem, world);
    reference_.clear();
    if (mem.size() > 0) {
      torch::Tensor loss = ctx.task_loss(ctx.model.forward(mem), mem) * (static_cast<double>(ctx.stream.loss_units(mem)) / units);
      reference_ = torch::autograd::grad({loss}, params_, {}, false, false, true);
    }
    reference_.resize(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (!reference_[i].defined()) reference_[i] = torch::zeros_like(params_[i]);
    world->all_reduce_sum(reference_);
  }
  void on_after_backward(StepContext&) override {
    if (reference_.empty()) return;
    std::vector<torch::Tensor> grads;
    for (auto& p : params_) grads.push_back(p.grad());
    agem_project(grads, reference_);
  }
  void on_after_step(StepContext& ctx) override {
    memory_.add(ctx.stream, ctx.global_current, {}, ctx.task, rng());  // every rank's rows: the same memory on each
  }
  void save(torch::serialize::OutputArchive& archive) const override { memory_.save(archive); }
  void load(torch::serialize::InputArchive& archive) override { memory_.load(archive, env().device); }

 private:
  AgemOptions o_;
  ReplayMemory memory_;
  std::vector<torch::Tensor> params_, reference_;
};

}  // namespace

void agem_project(std::vector<torch::Tensor>& grads, const std::vector<torch::Tensor>& reference) {
  std::vector<torch::Tensor> g, r;
  for (std::size_t i = 0; i < grads.size(); ++i)
    if (grads[i].defined() && reference[i].defined()) g.push_back(grads[i].view(-1)), r.push_back(reference[i].view(-1));
  if (g.empty()) return;
  torch::NoGradGuard no_grad;
  torch::Tensor gflat = torch::cat(g), rflat = torch::cat(r);
  // min(0, g.r) / r.r: zero when g agrees with the reference, so no branch and no host sync.
  torch::Tensor coef = gflat.dot(rflat).clamp_max(0.0) / (rflat.dot(rflat) + 1e-12);
  for (std::size_t i = 0; i < grads.size(); ++i)
    if (grads[i].defined() && reference[i].defined()) grads[i].sub_(coef * reference[i]);
}

void register_agem(StrategyRegistry& registry) {
  registry.add<AgemOptions>("agem", "A-GEM: project the gradient when it conflicts with a memory reference gradient",
                            [](const AgemOptions& o, uint64_t) { return std::make_shared<Agem>(o); });
}

}  // namespace clrun
