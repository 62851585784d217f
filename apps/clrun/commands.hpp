// One function per subcommand (mamba style): set_<cmd>_command registers its options and the
// callback; main() owns error handling and exit codes.
#pragma once
#include <chrono>

#include <string>
#include <vector>

#include <CLI/App.hpp>

#include "clrun/config/spec.hpp"

namespace clrun::app {

/// Set by a subcommand callback; main() returns it.
extern int g_exit_code;
extern std::chrono::steady_clock::time_point g_started;
/// The command line as given (--nproc starts its ranks with it, less --nproc).
extern std::vector<std::string> g_args;

/// Starts `nproc` ranks of this program with `args` and the torchrun variables on 127.0.0.1;
/// returns 0 when all succeed, else the first failing rank's exit code.
int launch_ranks(int nproc, const std::vector<std::string>& args, std::chrono::seconds timeout);

/// The config plus --set overrides; --seed and --device are overrides too, so they show up in
/// the resolved config like any other key.
ExperimentSpec load_with_overrides(const std::string& config, const std::vector<std::string>& sets,
                                   const std::string& seed, const std::string& device);

void set_run_command(CLI::App& app);
void set_validate_command(CLI::App* sub);
void set_list_command(CLI::App* sub);
void set_report_command(CLI::App* sub);
void set_export_command(CLI::App* sub);
void set_forward_command(CLI::App* sub);
void set_generate_command(CLI::App* sub);

}  // namespace clrun::app
