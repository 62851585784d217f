// `clrun validate CONFIG`: parse, check and print the resolved config (or, with --run-dir, only
// where the run would go); builds nothing heavy.
#include <iostream>

#include <CLI/CLI.hpp>

#include "clrun/config/spec.hpp"
#include "clrun/train/experiment.hpp"
#include "commands.hpp"

namespace clrun::app {

void set_validate_command(CLI::App* sub) {
  auto config = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto seed = std::make_shared<std::string>();
  auto device = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto run_dir = std::make_shared<bool>(false);
  sub->add_option("config", *config, "experiment YAML")->required();
  sub->add_option("--set", *sets, "override a key: --set train.optimizer.lr=0.1 (repeatable)");
  sub->add_option("--seed", *seed, "run seed (same as --set seed=N)");
  sub->add_option("--device", *device, "auto | cpu | cuda | cuda:N (same as --set device=...)");
  sub->add_flag("--json", *json, "print the resolved config as JSON instead of YAML");
  // scripts/sweep asks where a run goes, so that it can skip or resume it.
  sub->add_flag("--run-dir", *run_dir, "print only the run directory the config would run in");
  sub->callback([=] {
    ExperimentSpec spec = load_with_overrides(*config, *sets, *seed, *device);
    if (*run_dir) {
      std::cout << default_run_dir(spec) << "\n";
      return;
    }
    nlohmann::json resolved = spec.resolved();
    std::cout << (*json ? resolved.dump(2) + "\n" : json_to_yaml(resolved));
    std::cerr << *config << ": OK (run directory would be " << default_run_dir(spec) << ")\n";
  });
}

}  // namespace clrun::app
