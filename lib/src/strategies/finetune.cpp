// `finetune`: train on each task in turn and nothing else (the lower bound).
#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {
class Finetune : public Strategy {};
}  // namespace

void register_finetune(StrategyRegistry& registry) {
  registry.add<NoOptions>("finetune", "train on each task in turn, nothing else (lower bound)",
                          [](const NoOptions&, uint64_t) { return std::make_shared<Finetune>(); });
}

}  // namespace clrun
