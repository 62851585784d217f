// Every registry, filled once by explicit register_* calls (no static initialisers: they vanish
// when a static library is linked). Adding a component = one file + one line in components.cpp.
#pragma once
#include "clrun/data/dataset.hpp"
#include "clrun/models/backbone.hpp"
#include "clrun/strategies/strategy.hpp"
#include "clrun/streams/stream.hpp"
#include "clrun/train/optim.hpp"

namespace clrun {

struct Registries {
  DatasetRegistry datasets{"dataset"};
  StreamRegistry streams{"stream"};
  BackboneRegistry backbones{"backbone"};
  StrategyRegistry strategies{"strategy"};
  OptimizerRegistry optimizers{"optimizer"};
  SchedulerRegistry schedulers{"scheduler"};
};

const Registries& registries();

}  // namespace clrun
