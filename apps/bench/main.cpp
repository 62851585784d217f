// clrun_bench: training throughput of the runner vs. a bare LibTorch loop on the same model,
// data, batches and optimizer, measured alternately in one process. Prints JSON (stdout) and a
// Markdown table (stderr). The bare loop is what a careful user writes by hand: whole split in
// one uint8 tensor, randperm + index_select batches, the same model (any backbone), sgd / adam /
// adamw, cross-entropy over the logits train.logits selects. Both sides time training steps
// only: the runner's train_samples_per_second counts the Trainer's step loops (TaskStats), not
// the strategy's before_task / after_task hooks (SoTU's merge and head fitting), evaluation or
// checkpoints. The bare loop trains every task on its own data (finetune); with a strategy that
// trains on other rows too (joint, cumulative, replay) the ratio compares unequal work. Text
// streams (t5): the bare loop pads each batch to its longest row (as the runner and Hugging
// Face's collator do) and takes the token cross-entropy; tokens/s counts non-pad source and
// target tokens.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "clrun/config/spec.hpp"
#include "clrun/core/error.hpp"
#include "clrun/core/seed.hpp"
#include "clrun/io/environment.hpp"
#include "clrun/models/model.hpp"
#include "clrun/strategies/fisher.hpp"
#include "clrun/train/experiment.hpp"
#include "clrun/train/optim.hpp"
#include "clrun/train/trainer.hpp"

namespace {

using namespace clrun;

struct BareResult {
  int64_t samples = 0;
  int64_t tokens = 0;  ///< text: non-pad source + target tokens trained on
  double seconds = 0;
  std::vector<torch::Tensor> weights;  ///< the model's parameters after the last task
};

/// The optimizer a user writes by hand from train.optimizer (LibTorch's own classes).
std::unique_ptr<torch::optim::Optimizer> bare_optimizer(const ExperimentSpec& spec, std::vector<torch::Tensor> params) {
  const nlohmann::json& o = spec.train.optimizer.resolved;
  const std::string name = spec.train.optimizer.name();
  if (name == "sgd")
    return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(o.at("lr").get<double>())
                                                           .momentum(o.at("momentum").get<double>())
                                                           .dampening(o.at("dampening").get<double>())
                                                           .weight_decay(o.at("weight_decay").get<double>())
                                                           .nesterov(o.at("nesterov").get<bool>()));
  auto betas = o.at("betas").get<std::vector<double>>();
  auto adam_like = [&](auto options) {
    return options.betas({betas.at(0), betas.at(1)})
        .eps(o.at("eps").get<double>())
        .weight_decay(o.at("weight_decay").get<double>())
        .amsgrad(o.at("amsgrad").get<bool>());
  };
  if (name == "adam") return std::make_unique<torch::optim::Adam>(params, adam_like(torch::optim::AdamOptions(o.at("lr").get<double>())));
  if (name == "adamw")
    return std::make_unique<torch::optim::AdamW>(params, adam_like(torch::optim::AdamWOptions(o.at("lr").get<double>())));
  throw InputError("clrun_bench's bare loop knows sgd, adam and adamw, not " + name);
}

/// The bare loop over the same tasks: the same model (Classifier over the config's backbone, the
/// runner's init seed), the same stream and input preparation (Stream::prepare: normalisation,
/// image and domain transforms), the same batches (the runner's shuffle generator), the loss over
/// the logits train.logits selects, and one fresh optimizer per task (reset_optimizer:
/// every_task) or one for the run (never). Every task trains on its own data, as finetune does;
/// no strategy hooks, no progress, no loss sums, no checks.
BareResult bare_loop(const ExperimentSpec& spec) {
  const TrainSpec& ts = spec.train;
  if (ts.accumulate_steps != 1) throw InputError("clrun_bench's bare loop has no gradient accumulation");
  if (spec.threads > 0) torch::set_num_threads(static_cast<int>(spec.threads));
  torch::manual_seed(spec.seed);
  std::shared_ptr<Stream> stream = spec.stream.build(spec.dataset.build(), spec.seed);  // as run_experiment
  if (spec.stream_common.validation > 0) stream->carve_validation(spec.stream_common.validation);
  stream->set_image_transforms(spec.transforms);
  stream->check_tasks();
  torch::manual_seed(derive_seed(spec.seed, {seed_purpose::model_init}));
  std::shared_ptr<Model> model = model_factory(spec, *stream, torch::kCPU)();  // the runner's model and init
  torch::manual_seed(spec.seed);  // dropout and the like draw from here, as in the runner
  model->train();
  std::vector<torch::Tensor> params = model->parameters();
  std::shared_ptr<Scheduler> scheduler = spec.train.scheduler.build();
  const bool per_step_lr = scheduler->interval == Scheduler::Interval::step;
  std::unique_ptr<torch::optim::Optimizer> opt;
  const double base_lr = spec.train.optimizer.resolved.at("lr").get<double>();
  auto set_lr = [&](double lr) {
    for (auto& g : opt->param_groups()) g.options().set_lr(lr);
  };
  const torch::Tensor labels = stream->train.labels;
  const int64_t B = ts.batch_size;
  BareResult r;
  for (const Task& task : stream->tasks) {
    // train.logits as an additive mask over the class logits (-1e30 outside the allowed classes).
    torch::Tensor mask;
    if (ts.logits != "all") {
      mask = torch::full({stream->num_classes}, -1e30, torch::kFloat32);
      std::vector<int64_t> classes = ts.logits == "seen" ? stream->classes_of(0, task.index) : task.classes;
      mask.index_fill_(0, torch::tensor(classes, torch::kInt64), 0.0);
    }
    if (!opt || ts.reset_optimizer == "every_task") opt = bare_optimizer(spec, params);
    const int64_t n = task.train_rows.size(0);
    const int64_t per_epoch = ts.drop_last ? n / B : (n + B - 1) / B;
    if (per_epoch == 0) continue;
    const int64_t total = ts.iterations > 0 ? ts.iterations : ts.epochs * per_epoch;
    const int64_t epochs = (total + per_epoch - 1) / per_epoch;
    const auto t = static_cast<uint64_t>(task.index);
    int64_t steps = 0;
    auto start = std::chrono::steady_clock::now();
    for (int64_t epoch = 0; epoch < epochs; ++epoch) {
      at::Generator shuffle = make_generator(spec.seed, {seed_purpose::shuffle, t, static_cast<uint64_t>(epoch)});
      torch::Tensor order = task.train_rows.index_select(0, torch::randperm(n, shuffle, torch::kInt64));
      if (!per_step_lr) set_lr(scheduler->lr(base_lr, epoch, epochs));
      for (int64_t b = 0; b < per_epoch && steps < total; ++b, ++steps) {
        if (per_step_lr) set_lr(scheduler->lr(base_lr, steps, total));
        torch::Tensor rows = order.slice(0, b * B, std::min(n, (b + 1) * B));
        std::optional<at::Generator> augment;  // random image transforms, drawn as the runner draws them
        if (stream->has_train_transforms())
          augment = make_generator(spec.seed, {seed_purpose::train_transform, t, static_cast<uint64_t>(epoch),
                                               static_cast<uint64_t>(b)});
        torch::Tensor loss;
        if (stream->is_text()) {
          Batch batch = stream->make_batch(stream->train, rows, {}, {task.index});
          torch::Tensor logits = model->forward(batch);
          loss = torch::nn::functional::cross_entropy(
              logits.reshape({-1, logits.size(-1)}), batch.targets.reshape({-1}),
              torch::nn::functional::CrossEntropyFuncOptions().ignore_index(Batch::kIgnoreTarget));
        } else {
          torch::Tensor x = stream->inputs(stream->train, rows, task, augment ? &*augment : nullptr);
          torch::Tensor logits = model->forward(Batch{x, {}, {}, {}, {}, {}});
          loss = torch::cross_entropy_loss(mask.defined() ? logits + mask : logits, labels.index_select(0, rows));
        }
        for (auto& p : params) p.mutable_grad() = torch::Tensor();  // zero_grad(set_to_none), as PyTorch 2
        loss.backward();
        if (ts.grad_clip > 0) torch::nn::utils::clip_grad_norm_(params, ts.grad_clip);
        opt->step();
        r.samples += rows.size(0);
      }
    }
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (stream->is_text()) {  // tokens counted outside the timed loop: whole epochs visit every row once
      const torch::Tensor rows = task.train_rows.cpu();
      const int64_t per_epoch_tokens = stream->train.images.index_select(0, rows).ne(0).sum().item<int64_t>() +
                                       stream->train.targets.index_select(0, rows).ne(0).sum().item<int64_t>();
      r.tokens += per_epoch_tokens * steps / per_epoch;
    }
  }
  for (const auto& p : params) r.weights.push_back(p.detach().clone());
  return r;
}

/// Largest absolute difference between the bare loop's final weights and the runner's last
/// checkpoint: 0 (or rounding) shows that both trained the same model on the same batches.
double weight_difference(const ExperimentSpec& spec, const BareResult& bare, const std::string& run_dir) {
  std::shared_ptr<Stream> stream = spec.stream.build(spec.dataset.build(), spec.seed);
  stream->set_image_transforms(spec.transforms);
  std::shared_ptr<Model> model = model_factory(spec, *stream, torch::kCPU)();
  char name[32];
  std::snprintf(name, sizeof(name), "task_%03d.pt", stream->num_tasks() - 1);
  torch::serialize::InputArchive archive, model_archive;
  archive.load_from(run_dir + "/checkpoints/" + name);
  archive.read("model", model_archive);
  model->load(model_archive);
  auto params = model->parameters();
  if (params.size() != bare.weights.size()) throw std::logic_error("bare and runner models differ in parameters");
  double diff = 0;
  for (std::size_t i = 0; i < params.size(); ++i)
    diff = std::max(diff, (params[i] - bare.weights[i]).abs().max().item<double>());
  return diff;
}

/// Seconds of the batched per-sample Fisher (Linear taps) and of one backward per sample, on
/// the first `samples` training samples of task 0 with the config's model at its initial weights.
nlohmann::json fisher_benchmark(const ExperimentSpec& spec, int64_t samples) {
  auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
  torch::manual_seed(spec.seed);
  auto model = std::make_shared<Classifier>(spec.backbone.build(stream->input_shape), stream->num_classes);
  LossFn loss;
  TaskContext ctx{0, *model, *stream, loss, nullptr, [&](int t, int64_t bs, int64_t limit, const auto& fn) {
                    for_each_train_batch(*stream, t, bs, limit, fn);
                  }};
  FisherOptions o;
  o.fisher_samples = samples;
  auto gen = make_generator(spec.seed, {seed_purpose::strategy});
  auto timed = [](auto&& f) {
    auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::vector<torch::Tensor> a, b;
  double batched = timed([&] { a = estimate_fisher(ctx, o, gen); });
  double loop = timed([&] { b = estimate_fisher_per_sample_loop(ctx, o, gen); });
  double diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, (a[i] - b[i]).abs().max().item<double>());
  return {{"samples", samples}, {"batched_seconds", batched}, {"loop_seconds", loop}, {"speedup", loop / batched},
          {"max_abs_difference", diff}};
}

double median(std::vector<double> v);

/// One Trainer over its own stream, model and strategy, built as run_experiment builds them.
struct Contestant {
  ExperimentSpec spec;
  std::shared_ptr<Stream> stream;
  std::shared_ptr<Model> model;
  std::shared_ptr<Strategy> strategy;
  std::unique_ptr<Trainer> trainer;
  explicit Contestant(ExperimentSpec s) : spec(std::move(s)) {
    stream = spec.stream.build(spec.dataset.build(), spec.seed);
    ModelFactory make = model_factory(spec, *stream, torch::kCPU);
    torch::manual_seed(derive_seed(spec.seed, {seed_purpose::model_init}));
    model = make();
    strategy = spec.strategy.build(spec.seed);
    trainer = std::make_unique<Trainer>(spec, *stream, model, *strategy, make);
  }
};

/// Per-step cost of a strategy against the baseline config, measured in one process with the two
/// interleaved in chunks of `chunk` optimizer steps on task 1 (after a full task 0), so that slow
/// drifts of a shared machine's speed hit both alike. Only the step loop is timed (TaskStats).
nlohmann::json overhead_benchmark(const ExperimentSpec& base, const ExperimentSpec& other, int64_t chunk, int chunks) {
  Contestant a(base), b(other);
  a.trainer->train_task(0);
  b.trainer->train_task(0);
  a.spec.train.iterations = b.spec.train.iterations = chunk;
  std::vector<double> ratios;
  double sa = 0, sb = 0;
  for (int c = 0; c < chunks; ++c) {
    const double ta = a.trainer->train_task(1).seconds, tb = b.trainer->train_task(1).seconds;
    sa += ta, sb += tb;
    ratios.push_back(tb / ta);
  }
  return {{"baseline", base.name}, {"strategy", other.name}, {"steps_per_chunk", chunk}, {"chunks", chunks},
          {"baseline_seconds", sa}, {"strategy_seconds", sb}, {"ratio_of_totals", sb / sa},
          {"median_chunk_ratio", median(ratios)}};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"clrun_bench: runner vs. bare LibTorch loop training throughput"};
  std::string config = "configs/finetune_split_fmnist.yaml";
  std::vector<std::string> sets;
  int rounds = 3;
  std::string work = "/tmp/clrun_bench";
  app.add_option("config", config, "experiment YAML (any backbone; sgd, adam or adamw)");
  app.add_option("--set", sets, "override a key (repeatable)");
  app.add_option("--rounds", rounds, "alternating measurements of each")->check(CLI::PositiveNumber);
  app.add_option("--work", work, "scratch directory for the runner's run directories");
  int64_t fisher_samples = 0;
  std::string overhead;
  int64_t chunk = 50;
  int chunks = 30;
  app.add_option("--overhead", overhead,
                 "instead: per-step cost of this strategy config against CONFIG, interleaved in one process");
  app.add_option("--chunk", chunk, "--overhead: optimizer steps per interleaved chunk");
  app.add_option("--chunks", chunks, "--overhead: chunks of each");
  app.add_option("--fisher", fisher_samples,
                 "instead: time EWC's batched per-sample Fisher against a per-sample loop on N samples");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  try {
    std::vector<Override> overrides;
    for (const auto& s : sets) overrides.push_back(parse_override(s));
    overrides.push_back({"device", "cpu"});
    ExperimentSpec spec = load_spec(config, overrides);
    if (!overhead.empty()) {
      nlohmann::json o = overhead_benchmark(spec, load_spec(overhead, overrides), chunk, chunks);
      std::cout << o.dump() << "\n";
      return 0;
    }
    if (fisher_samples > 0) {
      nlohmann::json f = fisher_benchmark(spec, fisher_samples);
      f["environment"] = environment_json();
      std::cout << f.dump(2) << "\n";
      return 0;
    }
    std::vector<double> runner, bare, ratio, bare_tokens;
    // With finetune, both sides train the same weights on the same batches: the first round
    // compares the bare loop's final weights with the runner's last checkpoint.
    const bool comparable = spec.strategy.name() == "finetune" && spec.output.checkpoints != "none";
    nlohmann::json weight_diff = nullptr;
    for (int r = 0; r < rounds; ++r) {
      // The order alternates (bare first in odd rounds, runner first in even ones), so that a
      // drift in the machine's speed does not favour one side.
      std::string out = work + "/round" + std::to_string(r);
      std::filesystem::remove_all(out);
      RunOptions options;
      options.out_dir = out;
      BareResult b;
      RunResult run;
      if (r % 2 == 0) b = bare_loop(spec);
      run = run_experiment(spec, options);
      if (r % 2 == 1) b = bare_loop(spec);
      if (r == 0 && comparable) weight_diff = weight_difference(spec, b, run.run_dir);
      double rate = run.metrics.at("timing").at("train_samples_per_second");
      bare.push_back(b.samples / b.seconds);
      bare_tokens.push_back(b.tokens / b.seconds);
      runner.push_back(rate);
      ratio.push_back(rate / bare.back());
      std::cerr << "round " << r + 1 << ": runner " << rate << " samples/s, bare " << bare.back() << " samples/s, ratio "
                << ratio.back() << "\n";
    }
    nlohmann::json env = environment_json();
    nlohmann::json result = {{"config", config},
                             {"overrides", sets},
                             {"rounds", rounds},
                             {"runner_samples_per_second", runner},
                             {"bare_samples_per_second", bare},
                             {"ratio", ratio},
                             {"median_ratio", median(ratio)},
                             {"bare_tokens_per_second", bare_tokens},
                             {"backbone", spec.backbone.name()},
                             {"optimizer", spec.train.optimizer.name()},
                             {"strategy", spec.strategy.name()},
                             {"timed", "training steps only, both sides (runner: TaskStats seconds; excludes strategy "
                                       "before_task/after_task hooks, evaluation, checkpoints)"},
                             {"final_weights_max_abs_difference", weight_diff},
                             {"environment", env}};
    std::cout << result.dump(2) << "\n";
    std::cerr << "\n| config | runner samples/s | bare samples/s | ratio (median of " << rounds << ") | BLAS | torch threads |\n"
              << "|---|---|---|---|---|---|\n"
              << "| " << config << " | " << median(runner) << " | " << median(bare) << " | " << median(ratio) << " | "
              << env["blas"]["kind"].get<std::string>() << " (" << env["blas"]["threads"] << ") | " << env["torch_threads"]
              << " |\n";
    if (!weight_diff.is_null())
      std::cerr << "\nSame work: the bare loop's final weights differ from the runner's by at most " << weight_diff.dump()
                << " (round 1).\n";
  } catch (const std::exception& e) {
    std::cerr << "clrun_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
