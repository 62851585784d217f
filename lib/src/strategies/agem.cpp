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
    Batch mem = memory_.sample(ctx.stream, o_.replay_batch_size > 0 ? o_.replay_batch_size : ctx.current_rows, rng());
    torch::Tensor loss = ctx.task_loss(ctx.model.forward(mem), mem);
    reference_ = torch::autograd::grad({loss}, params_, /*grad_outputs=*/{}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
  }
  void on_after_backward(StepContext&) override {
    if (reference_.empty()) return;
    std::vector<torch::Tensor> g, r;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (!params_[i].grad().defined() || !reference_[i].defined()) continue;
      g.push_back(params_[i].grad().view(-1));
      r.push_back(reference_[i].view(-1));
    }
    if (g.empty()) return;
    torch::Tensor gflat = torch::cat(g), rflat = torch::cat(r);
    torch::Tensor coef = (gflat.dot(rflat).clamp_max(0.0) / (rflat.dot(rflat) + 1e-12));
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0, k = 0; i < params_.size(); ++i) {
      if (!params_[i].grad().defined() || !reference_[i].defined()) continue;
      params_[i].mutable_grad().sub_(coef * r[k++].view_as(params_[i]));
    }
  }
  void on_after_step(StepContext& ctx) override {
    Batch current = ctx.batch.select(torch::arange(ctx.current_rows, ctx.batch.index.options()));
    memory_.add(ctx.stream, current, {}, ctx.task, rng());
  }
  void save(torch::serialize::OutputArchive& archive) const override { memory_.save(archive); }
  void load(torch::serialize::InputArchive& archive) override { memory_.load(archive, env().device); }

 private:
  AgemOptions o_;
  ReplayMemory memory_;
  std::vector<torch::Tensor> params_, reference_;
};

}  // namespace

void register_agem(StrategyRegistry& registry) {
  registry.add<AgemOptions>("agem", "A-GEM: project the gradient when it conflicts with a memory reference gradient",
                            [](const AgemOptions& o, uint64_t) { return std::make_shared<Agem>(o); });
}

}  // namespace clrun
