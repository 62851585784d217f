// clrun_bench: training throughput of the runner vs. a bare LibTorch loop on the same model,
// data, batches and optimizer, measured alternately in one process. Prints JSON (stdout) and a
// Markdown table (stderr). The bare loop is what a careful user writes by hand: whole split in
// one uint8 tensor, randperm + index_select batches, Sequential MLP, SGD.
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "clrun/config/spec.hpp"
#include "clrun/core/error.hpp"
#include "clrun/io/environment.hpp"
#include "clrun/strategies/fisher.hpp"
#include "clrun/core/seed.hpp"
#include "clrun/train/experiment.hpp"
#include "clrun/train/trainer.hpp"

namespace {

using namespace clrun;

struct BareResult {
  int64_t samples = 0;
  double seconds = 0;
};

/// The bare loop over the same tasks (one fresh SGD per task, as the runner's default).
BareResult bare_loop(const ExperimentSpec& spec) {
  auto dataset = spec.dataset.build();
  auto stream = spec.stream.build(dataset, spec.seed);
  const nlohmann::json& mlp = spec.backbone.resolved;
  const nlohmann::json& sgd = spec.train.optimizer.resolved;
  if (spec.backbone.name() != "mlp" || spec.train.optimizer.name() != "sgd")
    throw InputError("clrun_bench compares an mlp backbone trained with sgd");
  for (const Task& task : stream->tasks)
    if (task.transform) throw InputError("clrun_bench's bare loop has no input transforms: use a split stream");
  torch::manual_seed(spec.seed);
  torch::nn::Sequential net{torch::nn::Flatten()};
  int64_t in = 1;
  for (int64_t d : stream->input_shape) in *= d;
  for (int64_t h : mlp.at("hidden").get<std::vector<int64_t>>()) {
    net->push_back(torch::nn::Linear(in, h));
    net->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
    in = h;
  }
  net->push_back(torch::nn::Linear(in, stream->num_classes));
  const torch::Tensor images = stream->train.images, labels = stream->train.labels;
  const double mean = dataset->mean[0], std = dataset->std[0];
  const int64_t B = spec.train.batch_size;
  BareResult r;
  for (const Task& task : stream->tasks) {
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(sgd.at("lr").get<double>())
                                                 .momentum(sgd.at("momentum").get<double>())
                                                 .weight_decay(sgd.at("weight_decay").get<double>()));
    const int64_t n = task.train_rows.size(0);
    auto start = std::chrono::steady_clock::now();
    for (int64_t epoch = 0; epoch < spec.train.epochs; ++epoch) {
      torch::Tensor order = task.train_rows.index_select(0, torch::randperm(n, torch::kInt64));
      for (int64_t b = 0; b < n; b += B) {
        torch::Tensor rows = order.slice(0, b, std::min(n, b + B));
        torch::Tensor x = images.index_select(0, rows).to(torch::kFloat32).mul_(1.0 / (255.0 * std)).sub_(mean / std);
        torch::Tensor loss = torch::cross_entropy_loss(net->forward(x), labels.index_select(0, rows));
        opt.zero_grad();
        loss.backward();
        opt.step();
        r.samples += rows.size(0);
      }
    }
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return r;
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
  app.add_option("config", config, "experiment YAML (mlp + sgd)");
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
    std::vector<double> runner, bare, ratio;
    for (int r = 0; r < rounds; ++r) {
      BareResult b = bare_loop(spec);
      std::string out = work + "/round" + std::to_string(r);
      std::filesystem::remove_all(out);
      RunOptions options;
      options.out_dir = out;
      RunResult run = run_experiment(spec, options);
      double rate = run.metrics.at("timing").at("train_samples_per_second");
      bare.push_back(b.samples / b.seconds);
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
                             {"environment", env}};
    std::cout << result.dump(2) << "\n";
    std::cerr << "\n| config | runner samples/s | bare samples/s | ratio (median of " << rounds << ") | BLAS | torch threads |\n"
              << "|---|---|---|---|---|---|\n"
              << "| " << config << " | " << median(runner) << " | " << median(bare) << " | " << median(ratio) << " | "
              << env["blas"]["kind"].get<std::string>() << " (" << env["blas"]["threads"] << ") | " << env["torch_threads"]
              << " |\n";
  } catch (const std::exception& e) {
    std::cerr << "clrun_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
