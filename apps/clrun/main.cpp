// clrun entry point: CLI parsing, logging setup and the single place errors become exit codes.
#include <unistd.h>

#include <iostream>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"
#include "clrun/io/environment.hpp"
#include "commands.hpp"

namespace clrun::app {
int g_exit_code = exit_code::ok;
std::chrono::steady_clock::time_point g_started = std::chrono::steady_clock::now();
std::vector<std::string> g_args;
}  // namespace clrun::app

int main(int argc, char** argv) {
  using namespace clrun;
  using namespace clrun::app;
  g_started = std::chrono::steady_clock::now() - std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                     std::chrono::duration<double>(process_age_seconds()));
  g_args.assign(argv, argv + argc);
  auto console = std::make_shared<spdlog::sinks::stderr_sink_mt>();  // stdout stays clean for validate/list output
  console->set_pattern("[%H:%M:%S] %^%l%$ %v");
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("clrun", console));
  spdlog::flush_on(spdlog::level::info);

  CLI::App app{"clrun: fast, faithful continual-learning experiments\n"
               "  clrun CONFIG.yaml [--set key.path=value ...] [--out DIR] [--seed N] [--device D] [--resume] [--nproc N]\n"
               "  clrun validate CONFIG.yaml [--set ...] [--run-dir]\n"
               "  clrun list [KIND] [--params]\n"
               "  clrun report RUN_DIR_OR_FOLDER... [--format md|csv] [--out-dir DIR] [--plot PREFIX] [--matrix RUN_DIR]\n"
               "  clrun export RUN_DIR [--task N] --out MODEL.safetensors\n"
               "  clrun forward CONFIG_OR_RUN_DIR --inputs IN.safetensors --out OUT.safetensors [--set ...]\n"
               "  clrun generate T5_CONFIG_OR_RUN_DIR --inputs IN.safetensors --out OUT.safetensors [--max-new-tokens N]",
               "clrun"};
  app.set_version_flag("--version", "clrun " + build_info().clrun_version + " (" + build_info().git_commit + ")");
  set_validate_command(app.add_subcommand("validate", "parse and check a config; build nothing heavy"));
  set_list_command(app.add_subcommand("list", "list registered streams, datasets, backbones, strategies, optimizers, schedulers"));
  set_report_command(app.add_subcommand("report", "mean ± std over seeds per config, as Markdown or CSV, and the accuracy-curve plot"));
  set_export_command(app.add_subcommand("export", "write a run's model (SoTU: the merged one) as safetensors with public names"));
  set_forward_command(app.add_subcommand("forward", "apply a model to the tensors of a safetensors file: features and logits "
                                                    "(t5: encoder states, logits and loss)"));
  set_generate_command(app.add_subcommand("generate", "greedy generation of a t5 model for the input_ids of a safetensors file"));
  set_run_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? exit_code::ok : exit_code::bad_input;
  } catch (const InputError& e) {
    spdlog::error("{}", one_line_error(e.what()));
    return exit_code::bad_input;
  } catch (const Interrupted&) {
    return exit_code::interrupted;

  } catch (const c10::Error& e) {
    spdlog::error("{}", one_line_error(e.what_without_backtrace()));  // what() carries a C++ stack trace
    return exit_code::failure;
  } catch (const std::exception& e) {
    spdlog::error("{}", one_line_error(e.what()));
    return exit_code::failure;
  } catch (...) {
    spdlog::error("unexpected error of unknown type (a bug: please report it with the config)");
    return exit_code::failure;
  }
  return app::g_exit_code;
}
