// Run orchestration: run directory, logging, building, the task loop, metrics and resume.
#include "clrun/train/experiment.hpp"

#include <cstdio>
#include <filesystem>
#include <thread>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "clrun/core/device.hpp"
#include "clrun/core/error.hpp"
#include "clrun/core/seed.hpp"
#include "clrun/eval/evaluator.hpp"
#include "clrun/eval/metrics.hpp"
#include "clrun/io/environment.hpp"
#include "clrun/io/run_dir.hpp"
#include "clrun/train/trainer.hpp"

namespace clrun {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Adds log.txt of the run directory to the default logger for the run's lifetime.
class RunLog {
 public:
  explicit RunLog(const std::string& path) {
    sink_ = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
    sink_->set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~RunLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

 private:
  std::shared_ptr<spdlog::sinks::sink> sink_;
};

/// Key paths where two resolved configs differ ("train.optimizer.lr: 0.1 -> 0.01").
std::vector<std::string> config_differences(const nlohmann::json& a, const nlohmann::json& b) {
  std::vector<std::string> out;
  for (const auto& op : nlohmann::json::diff(a, b)) {
    std::string path = op.at("path").get<std::string>().substr(1);
    std::replace(path.begin(), path.end(), '/', '.');
    nlohmann::json::json_pointer ptr(op.at("path").get<std::string>());
    std::string before = a.contains(ptr) ? a.at(ptr).dump() : "(absent)";
    std::string after = b.contains(ptr) ? b.at(ptr).dump() : "(absent)";
    out.push_back(path + ": " + before + " -> " + after);
  }
  return out;
}

void log_environment(const nlohmann::json& env, const std::string& device) {
  const auto& blas = env.at("blas");
  spdlog::info("clrun {} ({}), libtorch {}, device {}, torch threads {}, BLAS {} ({} threads)",
               env.at("clrun_version").get<std::string>(), env.at("git_commit").get<std::string>(),
               env.at("versions").at("libtorch").get<std::string>(), device, env.at("torch_threads").get<int>(),
               blas.at("kind").get<std::string>(), blas.at("threads").get<int>());
  if (blas.at("kind") == "reference")
    spdlog::warn("!!! The reference BLAS is loaded ({}): training is ~27x slower. "
                 "Install libopenblas0-pthread (scripts/setup does). !!!",
                 blas.at("path").get<std::string>());
}

std::string format_row(const AccuracyMatrix& m, int row) {
  std::string out;
  char buf[16];
  for (int i = 0; i < m.num_tasks(); ++i) {
    if (m.evaluated(row, i)) std::snprintf(buf, sizeof(buf), "%6.2f", m.accuracy(row, i));
    else std::snprintf(buf, sizeof(buf), "%6s", "-");
    out += (i ? " " : "") + std::string(buf);
  }
  return out;
}

/// Run progress that a checkpoint carries and metrics.json reports.
struct RunState {
  AccuracyMatrix accuracy, task_aware;
  std::vector<TaskStats> tasks;
  double train_seconds = 0, eval_seconds = 0, previous_wall_seconds = 0;
  int completed() const { return accuracy.num_rows(); }

  nlohmann::json to_json() const {
    nlohmann::json per_task = nlohmann::json::array();
    for (const auto& t : tasks) per_task.push_back(t.to_json());
    return {{"accuracy", accuracy.to_json()},
            {"task_aware", task_aware.to_json()},
            {"tasks", per_task},
            {"train_seconds", train_seconds},
            {"eval_seconds", eval_seconds},
            {"wall_seconds", previous_wall_seconds}};
  }
  static RunState from_json(const nlohmann::json& j) {
    RunState s;
    s.accuracy = AccuracyMatrix::from_json(j.at("accuracy"));
    s.task_aware = AccuracyMatrix::from_json(j.at("task_aware"));
    for (const auto& t : j.at("tasks")) s.tasks.push_back(TaskStats::from_json(t));
    s.train_seconds = j.at("train_seconds");
    s.eval_seconds = j.at("eval_seconds");
    s.previous_wall_seconds = j.at("wall_seconds");
    return s;
  }
};

nlohmann::json accuracy_block(const AccuracyMatrix& m) {
  nlohmann::json j = m.to_json();
  j["metrics"] = to_json(compute_metrics(m));
  return j;
}

}  // namespace

std::string default_run_dir(const ExperimentSpec& spec) {
  nlohmann::json resolved = spec.resolved();
  resolved.erase("output");  // where the run goes is not what the run is
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : resolved.dump()) h = (h ^ c) * 1099511628211ULL;
  char hash[9];
  std::snprintf(hash, sizeof(hash), "%08x", static_cast<unsigned>(h ^ (h >> 32)));
  return spec.output.dir + "/" + spec.name + "_seed" + std::to_string(spec.seed) + "_" + hash;
}

namespace {

/// Refuses to clobber a run; --overwrite deletes only what looks like a run directory. Returns
/// the previous metrics.json when the run continues (--resume).
std::optional<nlohmann::json> claim_run_dir(const RunDir& dir, const RunOptions& options, const nlohmann::json& resolved) {
  if (options.overwrite) {
    bool is_run = std::filesystem::exists(dir.file("metrics.json")) || std::filesystem::exists(dir.file("config.json"));
    if (!is_run && !dir.empty_but_lock())
      throw InputError("--overwrite: " + dir.path() + " is not a clrun run directory (no metrics.json or "
                       "config.json); refusing to delete it");
    dir.clear();
    return std::nullopt;
  }
  std::optional<nlohmann::json> previous = dir.read_json("metrics.json");
  auto is_metrics = [](const nlohmann::json& j) {
    if (!j.is_object() || !j.value("status", nlohmann::json()).is_string()) return false;
    nlohmann::json done = j.value("tasks_completed", nlohmann::json());
    return done.is_number_integer() && done.get<int64_t>() >= 0;
  };
  if (previous && !is_metrics(*previous))
    throw InputError(dir.file("metrics.json") + ": not a clrun metrics file (expected an object with a string "
                     "status and a tasks_completed count); --overwrite replaces the run, --out DIR starts elsewhere");
  if (previous && !options.resume)
    throw InputError(dir.path() + " already holds a run (status: " + previous->value("status", "?") +
                     ", " + std::to_string(previous->value("tasks_completed", 0)) + " tasks done): pass --resume to "
                     "continue it, --overwrite to replace it, or --out DIR for a new run directory");
  if (previous && options.resume) {
    std::optional<nlohmann::json> old_config = dir.read_json("config.json");
    if (old_config) {
      auto diffs = config_differences(*old_config, resolved);
      if (!diffs.empty())
        throw InputError("--resume: the config differs from the one " + dir.path() + " was started with: " +
                         join(diffs, "; ") + "\nhint: resume with the same config and --set values, or drop --resume");
    }
    const int done = previous->value("tasks_completed", 0);
    if (done > 0 && !dir.latest_checkpoint())
      throw InputError("--resume: " + dir.path() + " has " + std::to_string(done) +
                       " completed tasks but no checkpoint to continue from (output.checkpoints: " +
                       resolved["output"].value("checkpoints", "?") +
                       "); --overwrite reruns it from the start");
  }
  return previous;
}

/// Where this process spent its time outside training and evaluation (timing.phases in
/// metrics.json; this process only, not summed over resumes).
struct Phases {
  double before_run = 0;  ///< process start to run_experiment: loading LibTorch, parsing the config
  double dataset = 0;     ///< reading (inflating, or the data cache) and checking the data set
  double stream = 0;      ///< building the tasks, moving the data to the device
  double setup = 0;       ///< run directory, model, strategy
  double write = 0;       ///< checkpoints and metrics.json

  nlohmann::json to_json() const {
    return {{"process_start_to_run", before_run}, {"dataset_load", dataset}, {"stream_build", stream},
            {"setup", setup}, {"writing", write}};
  }
};

/// The stream on the run's device, with the validation split carved if asked.
std::shared_ptr<Stream> build_stream(const ExperimentSpec& spec, torch::Device device, Phases& phases) {
  auto t0 = Clock::now();
  std::shared_ptr<const Dataset> data = spec.dataset.build();
  phases.dataset = seconds_since(t0);
  t0 = Clock::now();
  std::shared_ptr<Stream> stream = spec.stream.build(data, spec.seed);
  if (spec.stream_common.validation > 0) stream->carve_validation(spec.stream_common.validation);
  stream->set_image_transforms(spec.transforms);
  stream->check_tasks();
  stream->to(device);
  phases.stream = seconds_since(t0);
  return stream;
}

/// metrics.json: the matrices, the named metrics and everything needed to reproduce them.
struct MetricsReport {
  const ExperimentSpec& spec;
  const Stream& stream;
  const Model& model;
  const Strategy& strategy;
  const Trainer& trainer;
  const nlohmann::json& resolved;
  const nlohmann::json& env;
  const RunDir& dir;
  const RunOptions& options;
  Clock::time_point run_start;
  const Phases& phases;
  const Evaluator& evaluator;
  const World* world;

  nlohmann::json operator()(const RunState& state, const std::string& status) const {
    nlohmann::json per_task = nlohmann::json::array();
    int64_t samples = 0;
    for (const auto& t : state.tasks) per_task.push_back(t.to_json()), samples += t.samples;
    const double wall = state.previous_wall_seconds + seconds_since(run_start);
    auto first_step = trainer.first_step_time();
    nlohmann::json j = {
        {"name", spec.name},
        {"status", status},
        {"seed", spec.seed},
        {"scenario", to_string(stream.scenario)},
        {"class_order", stream.class_order},
        {"tasks_completed", state.completed()},
        {"num_tasks", stream.num_tasks()},
        {"metrics", to_json(compute_metrics(state.accuracy))},
        {"accuracy", accuracy_block(state.accuracy)},
        {"per_task", per_task},
        {"timing",
         {{"wall_seconds", wall},
          {"train_seconds", state.train_seconds},
          {"eval_seconds", state.eval_seconds},
          {"train_samples_per_second", state.train_seconds > 0 ? samples / state.train_seconds : 0.0},
          {"startup_seconds", first_step ? nlohmann::json(std::chrono::duration<double>(*first_step - options.started).count())
                                         : nlohmann::json(nullptr)},
          {"phases", phases.to_json()}}},
        {"peak_rss_mib", peak_rss_mib()},
        {"device", stream.device().str()},
        {"model", {{"parameters", count_parameters(model)}}},
        {"strategy_hooks", strategy.hook_stats()},
        {"strategy_state", strategy.describe()},
        {"conventions",
         {{"reset_optimizer", spec.train.reset_optimizer},
          {"logits", spec.train.logits},
          {"drop_last", spec.train.drop_last},
          {"eval_classes", spec.eval.eval_classes},
          {"evaluated_on", stream.validation ? "validation split carved from the training data" : "test set"},
          {"shuffle", "reshuffled every epoch from (seed, task, epoch)"},
          {"class_il_future_tasks", "scored over the classes of tasks 0..max(trained, evaluated)"},
          {"future_tasks", spec.eval.future_tasks
                               ? "scored after every task (random-init row included)"
                               : "not scored (eval.future_tasks: false): their matrix entries and the random-init "
                                 "row are null, so fwt is null"}}},
        {"stream", stream.describe()},
        {"config", resolved},
        {"environment", env},
        {"run_dir", dir.path()},
    };
    if (stream.scenario == Scenario::class_il) j["task_aware_accuracy"] = accuracy_block(state.task_aware);
    if (world) j["distributed"] = world->describe();
    if (stream.is_text()) {
      const double s = evaluator.generation_seconds();
      j["timing"]["generation"] = {{"tokens", evaluator.generated_tokens()}, {"seconds", s},
                                   {"tokens_per_second", s > 0 ? evaluator.generated_tokens() / s : 0.0},
                                   {"note", "greedy decoding in this process (not summed over resumes)"}};
    }
    if (auto* s2s = dynamic_cast<const Seq2SeqModel*>(&model)) j["model"]["architecture"] = s2s->backbone->describe();
    return j;
  }
};

void log_task(const RunState& state, const TaskStats& stats, int num_tasks, bool class_il) {
  const int t = stats.task;
  Metrics m = compute_metrics(state.accuracy);
  spdlog::info("task {}/{}: {} steps, {:.0f} samples/s, loss {:.4f} | accuracy [{}] | average {:.2f}{}", t + 1,
               num_tasks, stats.steps, stats.seconds > 0 ? stats.samples / stats.seconds : 0.0, stats.mean_loss,
               format_row(state.accuracy, t), m.average_accuracy_curve.back(),
               class_il ? fmt::format(" (task-aware {:.2f})", compute_metrics(state.task_aware).average_accuracy_curve.back()) : "");
}

void log_summary(const nlohmann::json& final_metrics, const RunState& state, const RunDir& dir) {
  const auto& named = final_metrics.at("metrics");
  auto shown = [](const nlohmann::json& x) { return x.is_null() ? std::string("n/a") : fmt::format("{:.2f}", x.get<double>()); };
  spdlog::info("done in {:.1f}s (train {:.1f}s, eval {:.1f}s): final average accuracy {:.2f}, average incremental "
               "accuracy {:.2f}, forgetting {}, bwt {}, fwt {}",
               final_metrics["timing"]["wall_seconds"].get<double>(), state.train_seconds, state.eval_seconds,
               named.at("final_average_accuracy").get<double>(), named.at("average_incremental_accuracy").get<double>(),
               shown(named.at("forgetting")), shown(named.at("bwt")), shown(named.at("fwt")));
  spdlog::info("metrics: {}", dir.file("metrics.json"));
}

/// predictions_after_task{t}.jsonl: every scored test row's generated answer beside its label,
/// so that a text result can be audited (and re-scored) from the run directory.
void write_predictions(const RunDir& dir, const Stream& stream, const EvalRow& row, int trained_task) {
  std::string out;
  for (const Task& task : stream.tasks) {
    const auto& answers = row.predictions.at(task.index);
    if (answers.empty()) continue;
    const torch::Tensor rows = task.test_rows.cpu();
    for (std::size_t i = 0; i < answers.size(); ++i) {
      const int64_t r = rows[static_cast<int64_t>(i)].item<int64_t>();
      const int64_t label = stream.test.labels[r].item<int64_t>();
      out += nlohmann::json({{"task", task.index}, {"dataset", task.name}, {"row", r}, {"prediction", answers[i].text},
                             {"label", label >= 0 ? nlohmann::json(stream.class_names.at(label)) : nlohmann::json(nullptr)},
                             {"correct", answers[i].correct}})
                 .dump() +
             "\n";
    }
  }
  dir.write_text("predictions_after_task" + std::to_string(trained_task) + ".jsonl", out);
}

}  // namespace

ModelFactory model_factory(const ExperimentSpec& spec, const Stream& stream, torch::Device device) {
  // The first call draws the run's initial weights from the model-init seed; later calls
  // (teachers, anchors) use the global generator, whose state is checkpointed, and are
  // overwritten by their owners anyway.
  return [&spec, &stream, device] {
    std::shared_ptr<Backbone> backbone = spec.backbone.build(stream.input_shape);
    std::shared_ptr<Model> model;
    if (auto lm = std::dynamic_pointer_cast<LanguageModel>(backbone)) {
      if (!stream.is_text())
        throw InputError("backbone: " + spec.backbone.name() + " reads token ids; " + stream.dataset + " is an image data set");
      lm->initialize(spec.backbone_common.init);
      model = std::make_shared<Seq2SeqModel>(lm);
    } else {
      if (stream.is_text())
        throw InputError("backbone: " + spec.backbone.name() + " is an image model; the text data set " + stream.dataset +
                         " needs a sequence-to-sequence backbone (t5)");
      auto classifier = std::make_shared<Classifier>(backbone, stream.num_classes);
      initialize(*classifier, spec.backbone_common.init);
      model = classifier;
    }
    model->to(device);
    return model;
  };
}

RunResult run_experiment(const ExperimentSpec& spec, const RunOptions& options) {
  const auto run_start = Clock::now();
  Phases phases;
  phases.before_run = std::chrono::duration<double>(run_start - options.started).count();
  RunDir dir(options.out_dir.empty() ? default_run_dir(spec) : options.out_dir);
  const nlohmann::json resolved = spec.resolved();

  // ---- environment and data: bad input fails here, before the run directory is touched
  if (options.world) {  // the machine's threads (spec `threads`, else every core) shared by its ranks
    const int budget = spec.threads > 0 ? static_cast<int>(spec.threads) : static_cast<int>(std::thread::hardware_concurrency());
    const int per_rank = std::max(1, budget / options.world->local_size);
    torch::set_num_threads(per_rank);
    set_blas_threads(per_rank);
  } else if (spec.threads > 0) {
    torch::set_num_threads(static_cast<int>(spec.threads));
  }
  torch::Device device = resolve_device(spec.device, "device");
  if (options.world && device.is_cuda() && !device.has_index())
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(options.world->local_rank));
  torch::manual_seed(spec.seed);
  std::shared_ptr<Stream> stream = build_stream(spec, device, phases);
  const auto setup_start = Clock::now();
  if (options.resume && options.overwrite) throw InputError("--resume and --overwrite exclude each other");
  std::unique_ptr<World> world = options.world ? std::make_unique<World>(*options.world, device) : nullptr;
  const bool writer = !world || world->is_main();  // rank 0 alone touches the run directory

  std::optional<nlohmann::json> previous;
  std::optional<RunLog> run_log;
  if (writer) {
    try {
      dir.lock();
      previous = claim_run_dir(dir, options, resolved);
      if (int stale = dir.remove_stale_temp_files())
        spdlog::info("{}: removed {} temp file(s) of writes that a stopped run left unfinished", dir.path(), stale);
      dir.create();
      run_log.emplace(dir.file("log.txt"));
      if (!previous) {
        dir.write_json("config.json", resolved);
        dir.write_text("config.yaml", "# Resolved config of this run: `clrun config.yaml --out DIR` repeats it.\n" +
                                          json_to_yaml(resolved));
      }
    } catch (...) {
      if (world) world->all_ok(false);  // the other ranks stop instead of waiting for rank 0
      throw;
    }
  }
  if (world && !world->all_ok(true))
    throw InputError("rank 0 could not start the run in " + dir.path() + "; its error says why");
  spdlog::info("run directory: {}", dir.path());
  const nlohmann::json env = environment_json();
  log_environment(env, device.str());

  // ---- model and strategy
  ModelFactory make_model = model_factory(spec, *stream, device);
  torch::manual_seed(derive_seed(spec.seed, {seed_purpose::model_init}));
  std::shared_ptr<Model> model = make_model();
  torch::manual_seed(spec.seed);
  std::shared_ptr<Strategy> strategy = spec.strategy.build(spec.seed);
  Trainer trainer(spec, *stream, model, *strategy, make_model, world.get());
  Progress progress(options.progress_bar);
  if (writer) trainer.set_progress(&progress);
  if (options.on_step) trainer.set_step_callback(options.on_step);
  Evaluator evaluator(*stream, *strategy, spec.eval.batch_size, spec.eval.eval_classes == "seen", spec.eval.future_tasks,
                      spec.eval.max_new_tokens, spec.train.precision == "bf16", world.get());
  const bool class_il = stream->scenario == Scenario::class_il;
  spdlog::info("{}: {} on {} ({}{}), {} tasks, {} classes; backbone {} ({} parameters); strategy {}", spec.name,
               stream->name, stream->dataset, to_string(stream->scenario), stream->validation ? ", validation split" : "",
               stream->num_tasks(), stream->num_classes, spec.backbone.name(), count_parameters(*model), spec.strategy.name());
  if (world)
    spdlog::info("data parallel: {} ranks ({}, {}), {} threads each; each global batch of {} rows is split among them",
                 world->size(), world->backend(), world->config().launcher, torch::get_num_threads(), spec.train.batch_size);

  phases.setup = seconds_since(setup_start);
  std::vector<int64_t> test_sizes;
  for (const Task& t : stream->tasks) test_sizes.push_back(t.test_rows.size(0));
  RunState state{AccuracyMatrix(test_sizes), AccuracyMatrix(test_sizes), {}, 0, 0, 0};

  std::optional<int> latest = dir.latest_checkpoint();
  if (options.resume && latest) {
    state = RunState::from_json(trainer.load_checkpoint(dir.checkpoint_path(*latest)));
    spdlog::info("resumed from {} ({} of {} tasks done)", dir.checkpoint_path(*latest), state.completed(),
                 stream->num_tasks());
  } else {
    if (options.resume) spdlog::info("--resume: no checkpoint in {}, starting from the beginning", dir.path());
    if (spec.eval.future_tasks && spec.eval.when == "every_task") {  // the random-init row only scores future tasks
      auto t0 = Clock::now();
      EvalRow init = evaluator.evaluate(*model, -1);
      state.eval_seconds += seconds_since(t0);
      state.accuracy.set_random_init(init.correct);
      if (class_il) state.task_aware.set_random_init(init.correct_task_aware);
    }
  }

  const MetricsReport metrics_json{spec,    *stream,   *model, *strategy, trainer,   resolved, env,
                                   dir,     options,   run_start, phases, evaluator, world.get()};
  try {
    for (int t = state.completed(); t < stream->num_tasks(); ++t) {
      TaskStats stats = trainer.train_task(t);
      state.train_seconds += stats.seconds;
      auto t0 = Clock::now();
      const bool scored = spec.eval.when == "every_task" || t + 1 == stream->num_tasks();
      EvalRow row = scored ? evaluator.evaluate(*model, t) : evaluator.skipped();
      state.eval_seconds += seconds_since(t0);
      if (writer && !row.predictions.empty()) write_predictions(dir, *stream, row, t);
      state.accuracy.add_row(row.correct);
      if (class_il) state.task_aware.add_row(row.correct_task_aware);
      state.tasks.push_back(stats);
      log_task(state, stats, stream->num_tasks(), class_il);
      // Checkpoint first, then metrics: metrics.json never claims a task the checkpoint lacks.
      const auto w0 = Clock::now();
      if (writer && spec.output.checkpoints != "none") {
        nlohmann::json saved = state.to_json();
        saved["wall_seconds"] = state.previous_wall_seconds + seconds_since(run_start);
        trainer.save_checkpoint(dir.checkpoint_path(t), saved);
        dir.set_latest_checkpoint(t, spec.output.checkpoints == "last");
      }
      if (writer && t + 1 < stream->num_tasks()) dir.write_json("metrics.json", metrics_json(state, "running"));
      phases.write += seconds_since(w0);
    }
  } catch (const Diverged& e) {
    // Everything written so far stays; the run is marked and not resumed by sweeps.
    nlohmann::json m = metrics_json(state, "diverged");
    m["diverged_at"] = {{"task", e.task}, {"epoch", e.epoch}, {"steps", e.steps}};
    if (writer) dir.write_json("metrics.json", m);
    throw;
  } catch (const Interrupted&) {
    progress.finish();
    if (writer) dir.write_json("metrics.json", metrics_json(state, "interrupted"));
    spdlog::warn("interrupted: {} of {} tasks complete and checkpointed; continue with --resume", state.completed(),
                 stream->num_tasks());
    throw;
  }
  nlohmann::json final_metrics = metrics_json(state, "complete");
  if (writer) dir.write_json("metrics.json", final_metrics);
  log_summary(final_metrics, state, dir);
  return {dir.path(), final_metrics};
}

}  // namespace clrun
