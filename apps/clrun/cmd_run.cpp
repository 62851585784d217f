// The default command: run (or resume) an experiment.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

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
  int nproc = 0;
  int dist_timeout = 0;
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
  app.add_option("--nproc", args->nproc,
                 "data-parallel training: start N processes on this machine (Gloo on CPU), each training a shard of "
                 "every batch; torchrun and srun -n N are detected from their environment instead")
      ->check(CLI::Range(1, 1024));
  app.add_option("--dist-timeout", args->dist_timeout,
                 "data parallel: seconds a rank waits for the others (rendezvous, each collective) before failing "
                 "(default 600; also CLRUN_DIST_TIMEOUT)")
      ->check(CLI::Range(1, 86400));
  app.callback([&app, args] {
    if (!app.get_subcommands().empty()) return;
    if (args->config.empty()) throw CLI::CallForHelp();
    ExperimentSpec spec = load_with_overrides(args->config, args->sets, args->seed, args->device);  // bad input fails once, here
    if (args->nproc > 1) {
      std::vector<std::string> rank_args;  // this command line without --nproc
      for (std::size_t i = 0; i < g_args.size(); ++i) {
        if (g_args[i] == "--nproc") ++i;
        else if (g_args[i].rfind("--nproc=", 0) != 0) rank_args.push_back(g_args[i]);
      }
      g_exit_code = launch_ranks(args->nproc, rank_args, std::chrono::seconds(args->dist_timeout > 0 ? args->dist_timeout : 600));
      return;
    }
    RunOptions options;
    options.world = WorldConfig::from_environment();
    if (options.world && args->dist_timeout > 0) options.world->timeout = std::chrono::seconds(args->dist_timeout);
    if (options.world && options.world->rank > 0) {  // rank 0 logs; the others only warn and fail
      spdlog::default_logger()->set_level(spdlog::level::warn);
      spdlog::set_pattern("[%H:%M:%S] rank " + std::to_string(options.world->rank) + " %^%l%$ %v");
    }
    options.out_dir = args->out;
    options.resume = args->resume;
    options.overwrite = args->overwrite;
    options.progress_bar = args->progress == "bar" || (args->progress == "auto" && isatty(STDERR_FILENO) &&
                                                        (!options.world || options.world->rank == 0));
    options.started = g_started;
    install_interrupt_handler();
    run_experiment(spec, options);
  });
}

}  // namespace clrun::app
