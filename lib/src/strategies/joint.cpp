// `joint`: train once, at the last task, on the union of every task's training data (upper
// bound, as Mammoth's joint). Rows of the accuracy matrix before the last task are therefore
// the untrained model's, so forgetting and bwt are not meaningful for this strategy.
#include <numeric>

#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {
class Joint : public Strategy {
 public:
  std::vector<int> training_tasks(int task, int num_tasks) const override {
    if (task != num_tasks - 1) return {};
    std::vector<int> all(num_tasks);
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
};
}  // namespace

void register_joint(StrategyRegistry& registry) {
  registry.add<NoOptions>("joint", "train once at the last task on all tasks' data (upper bound)",
                          [](const NoOptions&, uint64_t) { return std::make_shared<Joint>(); });
}

}  // namespace clrun
