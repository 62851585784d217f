// The default command: run (or resume) an experiment.
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "clrun/config/spec.hpp"
#include "clrun/core/interrupt.hpp"
#include "clrun/train/experiment.hpp"
#include "commands.hpp"

namespace clrun::app {

namespace {
struct RunArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string out;
  std::string seed;
  std::string device;
  bool resume = false;
  bool overwrite = false;
  std::string progress = "auto";
};
}  // namespace

ExperimentSpec load_with_overrides(const std::string& config, const std::vector<std::string>& sets,
                                   const std::string& seed, const std::string& device) {
  std::vector<Override> overrides;
  for (const auto& s : sets) overrides.push_back(parse_override(s));
  if (!seed.empty()) overrides.push_back({"seed", seed});
  if (!device.empty()) overrides.push_back({"device", device});
  return load_spec(config, overrides);
}

void set_run_command(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  app.add_option("config", args->config, "experiment YAML (see configs/)");
  app.add_option("--set", args->sets, "override a key: --set train.optimizer.lr=0.1 (repeatable)");
  app.add_option("--out", args->out, "run directory (default: {output.dir}/{name}_seed{seed}_{hash})");
  app.add_option("--seed", args->seed, "run seed (same as --set seed=N)");
  app.add_option("--device", args->device, "auto | cpu | cuda | cuda:N (same as --set device=...)");
  app.add_flag("--resume", args->resume, "continue the run in the run directory from its last completed task");
  app.add_flag("--overwrite", args->overwrite, "replace the run already in the run directory");
  app.add_option("--progress", args->progress, "progress display: auto (bar on a terminal), bar, log")
      ->check(CLI::IsMember({"auto", "bar", "log"}));
  app.callback([&app, args] {
    if (!app.get_subcommands().empty()) return;
    if (args->config.empty()) throw CLI::CallForHelp();
    ExperimentSpec spec = load_with_overrides(args->config, args->sets, args->seed, args->device);
    RunOptions options;
    options.out_dir = args->out;
    options.resume = args->resume;
    options.overwrite = args->overwrite;
    options.progress_bar = args->progress == "bar" || (args->progress == "auto" && isatty(STDERR_FILENO));
    options.started = g_started;
    install_interrupt_handler();
    run_experiment(spec, options);
  });
}

}  // namespace clrun::app
