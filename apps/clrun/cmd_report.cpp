// `clrun report PATH... [--format md|csv] [--plot PREFIX] [--out-dir DIR] [--matrix RUN_DIR]`:
// mean ± std over seeds of every metric, per config, from run directories (or folders of them).
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "clrun/core/error.hpp"
#include "clrun/io/atomic.hpp"
#include "clrun/io/report.hpp"
#include "commands.hpp"

namespace clrun::app {

namespace {
struct ReportArgs {
  std::vector<std::string> paths;
  std::string format = "md";
  std::string plot;
  std::string out_dir;
  std::string matrix;
};

void run_report(const ReportArgs& args) {
  if (!args.matrix.empty()) std::cout << accuracy_matrices_markdown(args.matrix);
  if (args.paths.empty()) {
    if (args.matrix.empty())
      throw InputError("report: give run directories or folders to search for runs (e.g. results/runs)");
    return;
  }
  if (!args.matrix.empty()) std::cout << "\n";
  Report report = build_report(load_runs(args.paths));
  const std::string markdown = report_markdown(report);
  const std::string csv = report_csv(report);
  std::cout << (args.format == "csv" ? csv : markdown) << std::flush;
  if (args.format == "csv" && !report.not_complete.empty())  // the CSV has no room for the note
    spdlog::warn("{} run(s) not complete, left out (clrun report --format md lists them)", report.not_complete.size());

  std::string plot_prefix = args.plot;
  if (!args.out_dir.empty()) {
    std::filesystem::create_directories(args.out_dir);
    write_file_atomic(args.out_dir + "/report.md", markdown);
    write_file_atomic(args.out_dir + "/report.csv", csv);
    spdlog::info("wrote {0}/report.md and {0}/report.csv", args.out_dir);
    if (plot_prefix.empty()) plot_prefix = args.out_dir + "/accuracy_curve";
  }
  if (!plot_prefix.empty()) spdlog::info("{}", write_curve_plot(report, plot_prefix));
}
}  // namespace

void set_report_command(CLI::App* sub) {
  auto args = std::make_shared<ReportArgs>();
  sub->add_option("paths", args->paths, "run directories, or folders searched recursively for runs");
  sub->add_option("--format", args->format, "table format on stdout: md (Markdown) or csv")
      ->check(CLI::IsMember({"md", "csv"}));
  sub->add_option("--plot", args->plot, "write the accuracy curve to PREFIX.dat, PREFIX.gp (and PREFIX.svg with gnuplot)");
  sub->add_option("--out-dir", args->out_dir, "also write DIR/report.md, DIR/report.csv, DIR/accuracy_curve.*");
  sub->add_option("--matrix", args->matrix, "print this run's accuracy matrices (percent)");
  sub->callback([args] { run_report(*args); });
}

}  // namespace clrun::app
