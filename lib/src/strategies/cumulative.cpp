// `cumulative`: at task t train on the training data of tasks 0..t.
#include <numeric>

#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {
class Cumulative : public Strategy {
 public:
  std::vector<int> training_tasks(int task, int) const override {
    std::vector<int> seen(task + 1);
    std::iota(seen.begin(), seen.end(), 0);
    return seen;
  }
};
}  // namespace

void register_cumulative(StrategyRegistry& registry) {
  registry.add<NoOptions>("cumulative", "at task t train on tasks 0..t (incremental joint)",
                          [](const NoOptions&, uint64_t) { return std::make_shared<Cumulative>(); });
}

}  // namespace clrun
