// Multi-run reports: reading metrics.json files defensively, grouping, statistics, Markdown/CSV,
// the gnuplot accuracy-curve plot and one run's accuracy matrices.
#include "clrun/io/report.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>

#include <spdlog/fmt/fmt.h>

#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"
#include "clrun/io/atomic.hpp"

extern char** environ;

namespace clrun {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- reading: every value is type-checked before use; any problem is one InputError line

/// Error messages stay on one line whatever bytes a (corrupt) file puts into them.
std::string one_line(std::string s) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return s;
}

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw InputError(one_line(file + ": " + what));
}

/// Deepest [ / { nesting outside strings. Checked before parsing so that the recursive code
/// after it (dump, flatten) never meets a pathologically deep file.
int nesting_depth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

json read_json_object(const std::string& file) {
  constexpr int max_depth = 64;
  std::string text;
  try {
    text = read_file(file);
  } catch (const std::exception&) {
    fail(file, "cannot read the file");
  }
  if (nesting_depth(text) > max_depth) fail(file, "nested more than " + std::to_string(max_depth) + " levels deep");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail(file, "not valid JSON (parse error at byte " + std::to_string(e.byte) + ")");
  } catch (const json::exception& e) {
    fail(file, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail(file, std::string("expected a JSON object, got ") + j.type_name());
  return j;
}

/// The value at a dotted key path, or nullptr where a key is missing.
const json* find(const std::string& file, const json& root, const std::string& path) {
  const json* j = &root;
  std::string walked;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t dot = std::min(path.find('.', start), path.size());
    if (!j->is_object()) fail(file, walked + ": expected an object, got " + j->type_name());
    auto it = j->find(path.substr(start, dot - start));
    if (it == j->end()) return nullptr;
    j = &*it;
    walked = path.substr(0, dot);
    start = dot + 1;
  }
  return j;
}

const json& require(const std::string& file, const json& root, const std::string& path) {
  const json* j = find(file, root, path);
  if (!j) fail(file, "missing \"" + path + "\"");
  return *j;
}

/// A string; `fallback` (if given) when missing.
std::string string_at(const std::string& file, const json& root, const std::string& path,
                      const char* fallback = nullptr) {
  const json* j = fallback ? find(file, root, path) : &require(file, root, path);
  if (!j) return fallback;
  if (!j->is_string()) fail(file, path + ": expected a string, got " + j->type_name());
  return j->get<std::string>();
}

/// A number; empty for null (an undefined metric).
std::optional<double> as_number(const std::string& file, const json& j, const std::string& path) {
  if (j.is_null()) return std::nullopt;
  if (!j.is_number()) fail(file, path + ": expected a number or null, got " + j.type_name());
  return j.get<double>();
}

/// A number; empty when missing or null.
std::optional<double> number_at(const std::string& file, const json& root, const std::string& path) {
  const json* j = find(file, root, path);
  return j ? as_number(file, *j, path) : std::nullopt;
}

std::vector<double> as_numbers(const std::string& file, const json& j, const std::string& path) {
  if (!j.is_array()) fail(file, path + ": expected a list of numbers, got " + j.type_name());
  std::vector<double> out;
  for (const json& x : j) {
    if (!x.is_number()) fail(file, path + ": expected a list of numbers, found " + x.type_name());
    out.push_back(x.get<double>());
  }
  return out;
}

/// A list of numbers; empty when missing or null.
std::vector<double> numbers_at(const std::string& file, const json& root, const std::string& path) {
  const json* j = find(file, root, path);
  return !j || j->is_null() ? std::vector<double>{} : as_numbers(file, *j, path);
}

std::string run_dir_of(const std::string& metrics_file) {
  std::string dir = fs::path(metrics_file).parent_path().string();
  return dir.empty() ? "." : dir;
}

/// Run directories below `dir` (or `dir` itself): the metrics.json files, not descending into runs.
void find_metrics_files(const std::string& dir, std::vector<std::string>& out) {
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / "metrics.json", ec)) {
    out.push_back((fs::path(dir) / "metrics.json").string());
    return;
  }
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    fs::path metrics = it->path() / "metrics.json";
    if (fs::is_regular_file(metrics, ec)) {
      out.push_back(metrics.string());
      it.disable_recursion_pending();
    }
  }
  if (ec) throw InputError(one_line(dir + ": cannot search for runs: " + ec.message()));
}

// ---- grouping and statistics

/// Config keys that do not change what a run measures: seeds of one config form one group.
const char* const ignored_config_keys[] = {"seed", "output", "threads", "device"};

/// Table order: the protocol's metrics as the spec lists them, any other named metric
/// (alphabetically), then the task-aware accuracy and the timings.
const std::vector<std::string> leading_columns = {"final_average_accuracy", "final_accuracy_samplewise",
                                                  "average_incremental_accuracy", "forgetting", "bwt", "fwt"};
const std::vector<std::string> trailing_columns = {"task_aware_final_average_accuracy", "wall_seconds",
                                                   "train_seconds"};

std::pair<std::size_t, std::string> column_rank(const std::string& name) {
  auto in = [&](const std::vector<std::string>& list) { return std::find(list.begin(), list.end(), name) - list.begin(); };
  if (std::size_t i = in(leading_columns); i < leading_columns.size()) return {i, ""};
  if (std::size_t i = in(trailing_columns); i < trailing_columns.size()) return {leading_columns.size() + 1 + i, ""};
  return {leading_columns.size(), name};
}

/// Leaf values of a config by key path ("train.optimizer.lr" -> 0.1); lists and empty maps are leaves.
void flatten(const json& j, const std::string& prefix, std::map<std::string, json>& out) {
  if (j.is_object() && !j.empty()) {
    for (const auto& [key, value] : j.items()) flatten(value, prefix.empty() ? key : prefix + "." + key, out);
  } else {
    out[prefix] = j;
  }
}

/// Labels for groups that share a config name (each label is the name on entry): the name plus
/// the keys whose values differ.
void label_groups(std::vector<RunGroup>& groups, const std::vector<json>& configs) {
  std::map<std::string, std::vector<std::size_t>> by_name;
  for (std::size_t g = 0; g < groups.size(); ++g) by_name[groups[g].label].push_back(g);
  for (const auto& [name, members] : by_name) {
    if (members.size() < 2) continue;
    std::vector<std::map<std::string, json>> flat(members.size());
    std::set<std::string> keys;
    for (std::size_t m = 0; m < members.size(); ++m) {
      flatten(configs[members[m]], "", flat[m]);
      for (const auto& kv : flat[m]) keys.insert(kv.first);
    }
    auto value = [&](std::size_t m, const std::string& key) -> std::optional<json> {
      auto it = flat[m].find(key);
      return it == flat[m].end() ? std::nullopt : std::optional<json>(it->second);
    };
    std::vector<std::string> differing;
    for (const std::string& key : keys)
      for (std::size_t m = 1; m < members.size(); ++m)
        if (value(m, key) != value(0, key)) {
          differing.push_back(key);
          break;
        }
    for (std::size_t m = 0; m < members.size(); ++m) {
      std::vector<std::string> parts;
      for (const std::string& key : differing) {
        std::optional<json> v = value(m, key);
        parts.push_back(key + "=" + (!v ? "(unset)" : v->is_string() ? v->get<std::string>() : v->dump()));
      }
      groups[members[m]].label = name + " (" + join(parts, ", ") + ")";
    }
  }
}

// ---- formatting

std::string fixed2(double x) { return fmt::format("{:.2f}", x); }

std::string stat_cell(const Stat& s, int group_size) {
  if (s.n == 0) return "n/a";
  std::string cell = fixed2(s.mean) + " ± " + fixed2(s.std);
  return s.n < group_size ? cell + " (n=" + std::to_string(s.n) + ")" : cell;
}

std::string markdown_escape(const std::string& s) {
  std::string out;
  for (char c : one_line(s)) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

std::string markdown_row(const std::vector<std::string>& cells) {
  std::string row = "|";
  for (const std::string& c : cells) row += " " + markdown_escape(c) + " |";
  return row + "\n";
}

/// "|---|---|---:|": text columns left, numbers right.
std::string markdown_rule(std::size_t text_columns, std::size_t number_columns) {
  std::string rule = "|";
  for (std::size_t i = 0; i < text_columns; ++i) rule += "---|";
  for (std::size_t i = 0; i < number_columns; ++i) rule += "---:|";
  return rule + "\n";
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_row(const std::vector<std::string>& cells) {
  std::vector<std::string> fields;
  for (const std::string& c : cells) fields.push_back(csv_field(c));
  return join(fields, ",") + "\n";
}

/// gnuplot single-quoted string ('' is a quote inside).
std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : one_line(s)) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

/// The groups drawn in the plot, in .dat block order.
std::vector<const RunGroup*> plotted_groups(const Report& report) {
  std::vector<const RunGroup*> out;
  for (const RunGroup& g : report.groups)
    if (!g.curve.empty()) out.push_back(&g);
  return out;
}

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = std::min(dirs.find(':', start), dirs.size());
    std::string dir = dirs.substr(start, end - start);
    if (!dir.empty() && ::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

/// Runs a program with stdout sent to stderr (ours is the report's); returns its exit status.
int run_quietly(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  pid_t pid = 0;
  int err = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string matrix_table(const std::string& file, const json& j, const std::string& key, const std::string& title) {
  const json& rows_json = require(file, j, key + ".matrix");
  if (!rows_json.is_array()) fail(file, key + ".matrix: expected a list of rows, got " + rows_json.type_name());
  std::vector<std::vector<double>> rows;  // null entries (tasks not scored: eval.future_tasks false) as NaN
  for (const json& row : rows_json) {
    if (!row.is_array()) fail(file, key + ".matrix: expected a list of numbers, got " + row.type_name());
    std::vector<double> values;
    for (const json& x : row) values.push_back(x.is_null() ? std::nan("") : as_number(file, x, key + ".matrix").value());
    rows.push_back(values);
  }
  std::vector<double> init = numbers_at(file, j, key + ".random_init");
  std::size_t tasks = init.size();
  for (const auto& row : rows) tasks = std::max(tasks, row.size());

  std::string out = title + " in percent; rows: after training task t, columns: task i\n\n";
  if (tasks == 0) return out + "(no task evaluated yet)\n";
  std::vector<std::string> header = {"after task"};
  for (std::size_t i = 0; i < tasks; ++i) header.push_back("task " + std::to_string(i + 1));
  out += markdown_row(header) + markdown_rule(1, tasks);
  auto add_row = [&](const std::string& label, const std::vector<double>& values) {
    std::vector<std::string> cells = {label};
    for (std::size_t i = 0; i < tasks; ++i)
      cells.push_back(i < values.size() && !std::isnan(values[i]) ? fixed2(values[i]) : "");
    out += markdown_row(cells);
  };
  if (!init.empty()) add_row("random init", init);
  for (std::size_t t = 0; t < rows.size(); ++t) add_row(std::to_string(t + 1), rows[t]);
  return out;
}

}  // namespace

// ---- public API

RunRecord read_run(const std::string& file) {
  const json j = read_json_object(file);
  RunRecord r;
  r.dir = run_dir_of(file);
  r.status = string_at(file, j, "status");
  if (r.status != "complete") return r;  // only listed, never aggregated

  r.config = require(file, j, "config");
  if (!r.config.is_object()) fail(file, std::string("config: expected an object, got ") + r.config.type_name());
  for (const char* key : ignored_config_keys) r.config.erase(key);
  r.name = string_at(file, j, "config.name");
  r.stream = string_at(file, j, "config.stream.name", "?") + " " +
             string_at(file, j, "config.stream.dataset.name", "?") + " " + string_at(file, j, "scenario", "?");
  r.strategy = string_at(file, j, "config.strategy.name", "?");

  const json& metrics = require(file, j, "metrics");
  if (!metrics.is_object()) fail(file, std::string("metrics: expected an object, got ") + metrics.type_name());
  for (const auto& [key, value] : metrics.items()) {
    if (value.is_array()) continue;  // curves
    r.values[key] = as_number(file, value, "metrics." + key);
  }
  r.curve = numbers_at(file, j, "metrics.average_accuracy_curve");
  if (find(file, j, "task_aware_accuracy"))
    r.values["task_aware_final_average_accuracy"] = number_at(file, j, "task_aware_accuracy.metrics.final_average_accuracy");
  r.values["wall_seconds"] = number_at(file, j, "timing.wall_seconds");
  r.values["train_seconds"] = number_at(file, j, "timing.train_seconds");
  return r;
}

std::vector<RunRecord> load_runs(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& path : paths) {
    std::error_code ec;
    fs::file_status status = fs::status(path, ec);
    if (!fs::exists(status)) throw InputError(one_line(path + ": no such file or directory"));
    std::size_t before = files.size();
    if (fs::is_regular_file(status)) files.push_back(path);
    else find_metrics_files(path, files);
    if (files.size() == before)
      throw InputError(one_line(path + ": no run found (no metrics.json in it or in any folder under it)"));
  }
  std::sort(files.begin(), files.end());  // a directory walk has no fixed order: keep rows and errors stable
  // The same run reached through two paths counts once.
  std::set<std::string> seen;
  std::vector<RunRecord> runs;
  for (const std::string& file : files) {
    std::error_code ec;
    std::string canonical = fs::weakly_canonical(file, ec).string();
    if (!seen.insert(ec ? file : canonical).second) continue;
    runs.push_back(read_run(file));
  }
  return runs;
}

Stat summarize(const std::vector<double>& values) {
  Stat s;
  s.n = static_cast<int>(values.size());
  if (s.n == 0) return s;
  for (double x : values) s.mean += x;
  s.mean /= s.n;
  if (s.n > 1) {
    double squares = 0;
    for (double x : values) squares += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(squares / (s.n - 1));
  }
  return s;
}

Report build_report(const std::vector<RunRecord>& runs) {
  Report report;
  std::map<std::string, std::size_t> group_of;  // config dump -> group index
  std::vector<std::vector<const RunRecord*>> members;
  std::vector<json> configs;
  std::set<std::string> columns;
  for (const RunRecord& r : runs) {
    if (r.status != "complete") {
      report.not_complete.push_back(r);
      continue;
    }
    auto [it, added] = group_of.emplace(r.config.dump(), members.size());
    if (added) members.emplace_back(), configs.push_back(r.config);
    members[it->second].push_back(&r);
    for (const auto& kv : r.values) columns.insert(kv.first);
  }
  report.columns.assign(columns.begin(), columns.end());
  std::sort(report.columns.begin(), report.columns.end(),
            [](const std::string& a, const std::string& b) { return column_rank(a) < column_rank(b); });

  for (const auto& group_runs : members) {
    RunGroup g;
    g.label = group_runs.front()->name;
    g.stream = group_runs.front()->stream;
    g.strategy = group_runs.front()->strategy;
    std::size_t tasks = 0;
    for (const RunRecord* r : group_runs) g.run_dirs.push_back(r->dir), tasks = std::max(tasks, r->curve.size());
    for (const std::string& column : report.columns) {
      std::vector<double> defined;
      for (const RunRecord* r : group_runs) {
        auto it = r->values.find(column);
        if (it != r->values.end() && it->second) defined.push_back(*it->second);
      }
      g.stats[column] = summarize(defined);
    }
    for (std::size_t t = 0; t < tasks; ++t) {
      std::vector<double> at_task;
      for (const RunRecord* r : group_runs)
        if (t < r->curve.size()) at_task.push_back(r->curve[t]);
      g.curve.push_back(summarize(at_task));
    }
    report.groups.push_back(std::move(g));
  }
  label_groups(report.groups, configs);
  std::sort(report.groups.begin(), report.groups.end(),
            [](const RunGroup& a, const RunGroup& b) { return a.label < b.label; });
  return report;
}

std::string report_markdown(const Report& report) {
  std::string out;
  if (report.groups.empty()) {
    out += "No complete runs.\n";
  } else {
    std::vector<std::string> header = {"run", "stream", "strategy", "n"};
    header.insert(header.end(), report.columns.begin(), report.columns.end());
    out += markdown_row(header) + markdown_rule(3, header.size() - 3);
    for (const RunGroup& g : report.groups) {
      const int n = static_cast<int>(g.run_dirs.size());
      std::vector<std::string> cells = {g.label, g.stream, g.strategy, std::to_string(n)};
      for (const std::string& column : report.columns) cells.push_back(stat_cell(g.stats.at(column), n));
      out += markdown_row(cells);
    }
    out += "\nmean ± std over the complete runs (seeds) of each config; std is the sample standard deviation "
           "(ddof=1), 0 when n=1; (n=k): defined in k of the n runs; n/a: defined in none. Accuracies in "
           "percent, times in seconds.\n";
  }
  if (!report.not_complete.empty()) {
    out += "\n" + std::to_string(report.not_complete.size()) + " run(s) not complete, left out:\n";
    for (const RunRecord& r : report.not_complete) out += "- " + markdown_escape(r.status) + ": " + markdown_escape(r.dir) + "\n";
  }
  return out;
}

std::string report_csv(const Report& report) {
  std::vector<std::string> header = {"run", "stream", "strategy", "n"};
  for (const std::string& column : report.columns)
    for (const char* suffix : {"_mean", "_std", "_n"}) header.push_back(column + suffix);
  std::string out = csv_row(header);
  for (const RunGroup& g : report.groups) {
    std::vector<std::string> cells = {g.label, g.stream, g.strategy, std::to_string(g.run_dirs.size())};
    for (const std::string& column : report.columns) {
      const Stat& s = g.stats.at(column);
      cells.push_back(s.n ? fixed2(s.mean) : "");
      cells.push_back(s.n ? fixed2(s.std) : "");
      cells.push_back(std::to_string(s.n));
    }
    out += csv_row(cells);
  }
  return out;
}

std::string curve_data(const Report& report) {
  std::string out =
      "# average accuracy on seen tasks (percent) after each task: mean and sample std (ddof=1) over runs\n"
      "# one block per group (gnuplot: index i); columns: task mean std n\n";
  std::size_t index = 0;
  for (const RunGroup* g : plotted_groups(report)) {
    if (index) out += "\n\n";
    out += "# " + std::to_string(index++) + ": " + one_line(g->label) + "\n";
    for (std::size_t t = 0; t < g->curve.size(); ++t) {
      const Stat& s = g->curve[t];
      out += std::to_string(t + 1) + " " + fixed2(s.mean) + " " + fixed2(s.std) + " " + std::to_string(s.n) + "\n";
    }
  }
  return out;
}

std::string curve_script(const Report& report, const std::string& prefix) {
  std::string out =
      "# clrun report: average accuracy on seen tasks after each task, mean ± std per group.\n"
      "# Render: gnuplot " + one_line(prefix) + ".gp  (or gnuplot -e \"out='other.svg'\" " + one_line(prefix) + ".gp)\n"
      "if (!exists(\"out\")) out = " + gnuplot_quote(prefix + ".svg") + "\n"
      "data = " + gnuplot_quote(prefix + ".dat") + "\n"
      "set terminal svg size 900,560 dynamic noenhanced font 'sans,12' background rgb 'white'\n"
      "set output out\n"
      "set xlabel 'task'\n"
      "set ylabel 'average accuracy on seen tasks (%)'\n"
      "set yrange [0:100]\n"
      "set xtics 1\n"
      "set grid\n"
      "set key outside below\n"
      "set style fill transparent solid 0.2 noborder\n"
      "plot";
  std::size_t index = 0;
  for (const RunGroup* g : plotted_groups(report)) {
    std::string i = std::to_string(index), color = std::to_string(index + 1);
    out += std::string(index++ ? ", \\\n" : " \\\n") + "  data index " + i +
           " using 1:($2-$3):($2+$3) with filledcurves lc " + color + " notitle, \\\n" + "  data index " + i +
           " using 1:2 with linespoints lc " + color + " lw 2 pt 7 title " + gnuplot_quote(g->label);
  }
  return out + "\n";
}

std::string write_curve_plot(const Report& report, const std::string& prefix) {
  if (plotted_groups(report).empty()) return "no complete run has an accuracy curve: nothing to plot";
  fs::path parent = fs::path(prefix).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  write_file_atomic(prefix + ".dat", curve_data(report));
  write_file_atomic(prefix + ".gp", curve_script(report, prefix));
  if (!on_path("gnuplot"))
    return "wrote " + prefix + ".dat and " + prefix + ".gp; gnuplot is not installed: render with `gnuplot " +
           prefix + ".gp`";
  write_atomic_with(prefix + ".svg", [&](const std::string& tmp) {
    int rc = run_quietly({"gnuplot", "-e", "out=" + gnuplot_quote(tmp), prefix + ".gp"});
    if (rc != 0) throw std::runtime_error("gnuplot " + prefix + ".gp failed (exit status " + std::to_string(rc) + ")");
  });
  return "wrote " + prefix + ".dat, " + prefix + ".gp and " + prefix + ".svg";
}

std::string accuracy_matrices_markdown(const std::string& run) {
  std::error_code ec;
  const std::string file = fs::is_directory(run, ec) ? (fs::path(run) / "metrics.json").string() : run;
  const json j = read_json_object(file);
  std::string out = one_line(run_dir_of(file)) + " (" + string_at(file, j, "scenario", "?") + ", status " +
                    string_at(file, j, "status", "?") + ")\n\n" + matrix_table(file, j, "accuracy", "accuracy");
  if (find(file, j, "task_aware_accuracy"))
    out += "\n" + matrix_table(file, j, "task_aware_accuracy", "task-aware accuracy (task-IL scoring)");
  return out;
}

}  // namespace clrun
