// A whole run: build stream, model and strategy from the spec, evaluate the untrained model,
// then train + evaluate + checkpoint task after task, writing metrics.json as it goes.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "clrun/config/spec.hpp"
#include "clrun/core/world.hpp"
#include "clrun/models/model.hpp"
#include "clrun/streams/stream.hpp"

namespace clrun {

struct RunOptions {
  std::string out_dir;        ///< run directory; empty = default_run_dir(spec)
  bool resume = false;        ///< continue from the last completed task
  bool overwrite = false;     ///< replace a run already in the run directory
  bool progress_bar = false;  ///< draw a terminal bar (else periodic log lines)
  /// Process start, for the startup-to-first-step figure.
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  /// Called after every optimizer step with (task, steps done in the task); tests use it.
  std::function<void(int, int64_t)> on_step;
  /// Data-parallel training: this process's place among the run's processes (null: one process).
  /// Every rank trains and evaluates its shards; rank 0 alone writes the run directory, and every
  /// rank resumes from it. The threads (spec `threads`, else every core) are divided among the
  /// ranks on a machine.
  std::optional<WorldConfig> world;
};

struct RunResult {
  std::string run_dir;
  nlohmann::json metrics;  ///< what metrics.json holds
};

/// `{output.dir}/{name}_seed{seed}_{hash}`: the hash of the resolved config keeps sweeps over
/// --set values apart and makes re-running the same command find the same directory.
std::string default_run_dir(const ExperimentSpec& spec);

/// Fresh models of the spec's architecture for `stream`, initialised by backbone.init, on
/// `device` (the run's model, and the copies strategies ask for). Keeps references to both.
ModelFactory model_factory(const ExperimentSpec& spec, const Stream& stream, torch::Device device);

/// Runs (or resumes) the experiment. Throws InputError for bad input (including a run
/// directory that already holds a run and neither --resume nor --overwrite), Interrupted after Ctrl-C once
/// metrics.json and the last checkpoint are safely written.
RunResult run_experiment(const ExperimentSpec& spec, const RunOptions& options);

}  // namespace clrun
