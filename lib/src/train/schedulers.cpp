// constant / cosine / step learning-rate schedules, restarted every task.
#include <algorithm>
#include <cmath>

#include "clrun/train/optim.hpp"

namespace clrun {

namespace {

/// Every scheduler has an `interval`: the unit it counts in.
struct IntervalField {
  std::string interval = "epoch";
  template <class V>
  void interval_field(V& v) {
    v("interval", interval, "what the schedule counts: epochs or optimizer steps", one_of({"epoch", "step"}));
  }
  Scheduler::Interval parsed() const { return interval == "step" ? Scheduler::Interval::step : Scheduler::Interval::epoch; }
};

struct ConstantOptions : IntervalField {
  template <class V>
  void fields(V& v) { interval_field(v); }
};

struct CosineOptions : IntervalField {
  double eta_min = 0;  ///< final learning rate
  int64_t warmup = 0;  ///< units of linear warm-up from 0
  template <class V>
  void fields(V& v) {
    v("eta_min", eta_min, "learning rate at the end of the task", at_least(0));
    v("warmup", warmup, "units of linear warm-up before the cosine decay", at_least(0));
    interval_field(v);
  }
};

struct StepOptions : IntervalField {
  std::vector<int64_t> milestones;  ///< units at which the rate is multiplied by gamma
  double gamma = 0.1;
  template <class V>
  void fields(V& v) {
    v("milestones", milestones, "units at which the rate is multiplied by gamma", at_least(1));
    v("gamma", gamma, "multiplicative factor", above(0));
    interval_field(v);
  }
};

class Constant : public Scheduler {
 public:
  double lr(double base, int64_t, int64_t) const override { return base; }
};

/// PyTorch's CosineAnnealingLR with T_max = the task's length, after an optional linear warm-up.
class Cosine : public Scheduler {
 public:
  explicit Cosine(const CosineOptions& o) : o_(o) {}
  double lr(double base, int64_t unit, int64_t total) const override {
    if (unit < o_.warmup) return base * static_cast<double>(unit + 1) / static_cast<double>(o_.warmup + 1);
    double span = static_cast<double>(std::max<int64_t>(1, total - o_.warmup));
    double progress = static_cast<double>(unit - o_.warmup) / span;
    return o_.eta_min + (base - o_.eta_min) * (1 + std::cos(M_PI * progress)) / 2;
  }

 private:
  CosineOptions o_;
};

/// PyTorch's MultiStepLR.
class Step : public Scheduler {
 public:
  explicit Step(const StepOptions& o) : o_(o) {}
  double lr(double base, int64_t unit, int64_t) const override {
    auto passed = std::count_if(o_.milestones.begin(), o_.milestones.end(), [&](int64_t m) { return unit >= m; });
    return base * std::pow(o_.gamma, static_cast<double>(passed));
  }

 private:
  StepOptions o_;
};

template <class S, class O>
std::shared_ptr<Scheduler> with_interval(std::shared_ptr<S> s, const O& o) {
  s->interval = o.parsed();
  return s;
}

}  // namespace

void register_schedulers(SchedulerRegistry& registry) {
  registry.add<ConstantOptions>("constant", "the optimizer's learning rate throughout",
                                [](const ConstantOptions& o) { return with_interval(std::make_shared<Constant>(), o); });
  registry.add<CosineOptions>("cosine", "cosine annealing to eta_min over each task (optional warm-up)",
                              [](const CosineOptions& o) { return with_interval(std::make_shared<Cosine>(o), o); });
  registry.add<StepOptions>("step", "multiply by gamma at each milestone (MultiStepLR)",
                            [](const StepOptions& o) { return with_interval(std::make_shared<Step>(o), o); });
}

}  // namespace clrun
