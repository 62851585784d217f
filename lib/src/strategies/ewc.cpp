// `ewc` (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018, `mode: online`).
// After task t: anchor theta*_t and diagonal Fisher F_t (strategies/fisher.hpp). While training
// task t the loss gains (lambda/2) sum_{k<t} sum_i F_k,i (theta_i - theta*_k,i)^2 (separate), or
// (lambda/2) sum_i F~_i (theta_i - theta*_i)^2 with F~ = gamma F~ + F_t and the latest anchor
// (online). Lambda follows this (lambda/2) convention: Avalanche's and Mammoth's penalties have no
// 1/2, so their lambda L corresponds to lambda = 2 L here.
//
// Speed: the penalty is a quadratic, so the sum over tasks folds into A = sum F_k,
// B = sum F_k theta*_k and C = sum F_k theta*_k^2: value = sum (A theta^2 - 2 B theta) + C,
// gradient = lambda (A theta - B). Its gradient is added in after_backward (before clipping) and
// its value is reported as the loss term "ewc", so the cost does not grow with the tasks and no
// autograd graph is built for it.
#include <torch/torch.h>

#include "clrun/strategies/fisher.hpp"
#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {

struct EwcOptions : FisherOptions {
  double lambda = 100;
  std::string mode = "separate";
  double gamma = 1.0;

  template <class V>
  void fields(V& v) {
    v("lambda", lambda, "penalty strength, (lambda/2) sum F (theta - theta*)^2 (Avalanche/Mammoth's lambda x 2)",
      at_least(0));
    v("mode", mode, "separate: one penalty per past task; online: one decayed Fisher and the latest anchor",
      one_of({"separate", "online"}));
    v("gamma", gamma, "online: decay of the accumulated Fisher", in_range(0, 1));
    FisherOptions::fields(v);
  }
};

class Ewc : public Strategy {
 public:
  explicit Ewc(const EwcOptions& o) : o_(o) {}

  nlohmann::json describe() const override {
    nlohmann::json fisher = nlohmann::json::array();
    for (const auto& s : fisher_stats_) fisher.push_back(s);
    return {{"fisher_estimator", o_.fisher}, {"mode", o_.mode}, {"fisher_per_task", fisher}};
  }

 protected:
  void on_after_backward(StepContext& ctx) override {
    if (a_.empty() || o_.lambda == 0) return;
    torch::NoGradGuard no_grad;
    auto params = ctx.model.parameters();
    std::vector<torch::Tensor> parts = {c_};
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!a_[i].defined() || !params[i].grad().defined()) continue;
      const torch::Tensor theta = params[i].view(-1);
      // g = A theta - B = sum_k F_k (theta - theta*_k), one fused kernel
      torch::Tensor g = torch::addcmul(neg_b_[i], a_[i], params[i]).view(-1);
      params[i].mutable_grad().view(-1).add_(g, o_.lambda);
      // sum (A theta^2 - 2 B theta) = g . theta - B . theta, as two dot products
      parts.push_back((g.dot(theta) + neg_b_[i].view(-1).dot(theta)).to(torch::kFloat64));
    }
    ctx.add_loss("ewc", (0.5 * o_.lambda * torch::stack(parts).sum()).to(torch::kFloat32));
  }

  void on_after_task(TaskContext& ctx) override {
    if (!ctx.optimizer) return;  // nothing was trained at this task
    std::vector<torch::Tensor> fisher = estimate_fisher(ctx, o_, rng());
    auto params = ctx.model.parameters();
    torch::NoGradGuard no_grad;
    const bool online = o_.mode == "online";
    if (a_.empty()) a_.assign(params.size(), {}), neg_b_.assign(params.size(), {});
    if (!c_.defined() || online) c_ = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(env().device));
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!fisher[i].defined()) continue;
      const torch::Tensor theta = params[i].detach();
      if (online) {  // F~ = gamma F~ + F_t around the latest anchor
        a_[i] = a_[i].defined() ? a_[i] * o_.gamma + fisher[i] : fisher[i].clone();
        neg_b_[i] = -(a_[i] * theta);
        c_ += (a_[i] * theta.square()).sum().to(torch::kFloat64);
      } else {  // one more (F_t, theta*_t) pair folded into A, B, C
        a_[i] = a_[i].defined() ? a_[i] + fisher[i] : fisher[i].clone();
        neg_b_[i] = neg_b_[i].defined() ? neg_b_[i] - fisher[i] * theta : -(fisher[i] * theta);
        c_ += (fisher[i] * theta.square()).sum().to(torch::kFloat64);
      }
    }
    double total = 0, max = 0;
    int64_t count = 0;
    for (const auto& f : fisher)
      if (f.defined()) total += f.sum().item<double>(), max = std::max(max, f.max().item<double>()), count += f.numel();
    fisher_stats_.push_back({{"task", ctx.task}, {"mean", count ? total / static_cast<double>(count) : 0.0}, {"max", max}});
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    write_tensors(archive, "A", a_);
    write_tensors(archive, "negB", neg_b_);
    write_tensors(archive, "C", {c_});
    archive.write("fisher_stats", c10::IValue(nlohmann::json(fisher_stats_).dump()));
  }
  void load(torch::serialize::InputArchive& archive) override {
    a_ = read_tensors(archive, "A", env().device);
    neg_b_ = read_tensors(archive, "negB", env().device);
    c_ = read_tensors(archive, "C", env().device).at(0);
    c10::IValue stats;
    archive.read("fisher_stats", stats);
    fisher_stats_ = nlohmann::json::parse(stats.toStringRef()).get<std::vector<nlohmann::json>>();
  }

 private:
  EwcOptions o_;
  std::vector<torch::Tensor> a_, neg_b_;  ///< A and -B per parameter (undefined = no penalty on it)
  torch::Tensor c_;                   ///< float64 scalar
  std::vector<nlohmann::json> fisher_stats_;
};

}  // namespace

void register_ewc(StrategyRegistry& registry) {
  registry.add<EwcOptions>("ewc", "elastic weight consolidation (separate or online), diagonal Fisher",
                           [](const EwcOptions& o, uint64_t) { return std::make_shared<Ewc>(o); });
}

}  // namespace clrun
