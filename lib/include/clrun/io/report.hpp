// Multi-run reports: find and read runs' metrics.json, group the seeds of one config, mean ± std
// of every named metric as Markdown or CSV, the accuracy-curve plot (gnuplot data + script), and
// one run's accuracy matrices. Every reader checks types and throws InputError naming the file.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace clrun {

/// What a report needs from one metrics.json, checked and extracted when it is read.
struct RunRecord {
  std::string dir;     ///< the run directory (holds metrics.json)
  std::string status;  ///< running | interrupted | complete | ... (only complete runs are aggregated)
  std::string name;    ///< config.name
  nlohmann::json config;  ///< the resolved config without seed, output, threads, device: the group key
  std::string stream;     ///< "split fashion-mnist class-il"
  std::string strategy;
  /// Every scalar named metric, plus task_aware_final_average_accuracy (class-IL), wall_seconds
  /// and train_seconds; empty = null (undefined for this run).
  std::map<std::string, std::optional<double>> values;
  std::vector<double> curve;  ///< metrics.average_accuracy_curve: average accuracy on seen tasks after each task
};

/// Reads one metrics.json. Only `status` is required of a run that is not complete; a complete
/// one also needs `config` (with `name`) and `metrics`.
RunRecord read_run(const std::string& metrics_path);

/// Each path is a run directory, a metrics.json, or a folder searched recursively for run
/// directories. A path that does not exist or holds no run is an InputError. Sorted by path.
std::vector<RunRecord> load_runs(const std::vector<std::string>& paths);

/// Mean and sample standard deviation (ddof=1; 0 for n=1) of the n values that are defined.
struct Stat {
  double mean = 0, std = 0;
  int n = 0;
};
Stat summarize(const std::vector<double>& values);

/// The complete runs of one config (all seeds).
struct RunGroup {
  std::string label;  ///< config name, plus the keys that tell apart groups of the same name
  std::string stream, strategy;
  std::vector<std::string> run_dirs;
  std::map<std::string, Stat> stats;  ///< per column
  std::vector<Stat> curve;            ///< per task
};

struct Report {
  std::vector<std::string> columns;  ///< named metrics (known ones first), task-aware, timing
  std::vector<RunGroup> groups;      ///< sorted by label
  std::vector<RunRecord> not_complete;
};

Report build_report(const std::vector<RunRecord>& runs);

/// Table with "mean ± std" cells (2 decimals), a line on the statistics, and the runs left out.
std::string report_markdown(const Report& report);
/// One row per group; per column `<name>_mean`, `<name>_std`, `<name>_n` (numbers, 2 decimals).
std::string report_csv(const Report& report);

/// gnuplot data: one block per group (blocks split by two blank lines, selected with `index`),
/// rows "task mean std n" with task = 1..T.
std::string curve_data(const Report& report);
/// gnuplot script that reads `<prefix>.dat` and draws `<prefix>.svg` (or the file named by the
/// variable `out`, if set with -e): one line per group with a ±std band.
std::string curve_script(const Report& report, const std::string& prefix);
/// Writes `<prefix>.dat` and `<prefix>.gp` and, if gnuplot is on PATH, renders `<prefix>.svg`.
/// Returns what was done, one line ("wrote ...", or how to render without gnuplot).
std::string write_curve_plot(const Report& report, const std::string& prefix);

/// A run's accuracy matrix as a Markdown table (percent, rows = after task t, columns = task i,
/// plus the random-init row), and the task-aware matrix too for class-IL. `run` is a run
/// directory or its metrics.json.
std::string accuracy_matrices_markdown(const std::string& run);

}  // namespace clrun
