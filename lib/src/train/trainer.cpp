// The training loop. Hot path rules: tensors stay on the device, batches are index_select-ed
// from the in-memory split, no .item() per step (the loss is summed on the device).
#include "clrun/train/trainer.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/torch.h>


#include "clrun/core/interrupt.hpp"
#include "clrun/core/seed.hpp"
#include "clrun/eval/evaluator.hpp"
#include "clrun/io/atomic.hpp"

namespace clrun {

nlohmann::json TaskStats::to_json() const {
  return {{"task", task},         {"trained_on", trained_on}, {"steps", steps},
          {"samples", samples},   {"epochs", epochs},         {"train_seconds", seconds},
          {"samples_per_second", seconds > 0 ? static_cast<double>(samples) / seconds : 0.0},
          {"mean_loss", mean_loss}, {"loss_terms", terms},    {"final_lr", final_lr}};
}

TaskStats TaskStats::from_json(const nlohmann::json& j) {
  TaskStats s;
  s.task = j.at("task");
  s.trained_on = j.at("trained_on").get<std::vector<int>>();
  s.steps = j.at("steps");
  s.samples = j.at("samples");
  s.epochs = j.at("epochs");
  s.seconds = j.at("train_seconds");
  s.mean_loss = j.at("mean_loss");
  s.terms = j.at("loss_terms").get<std::map<std::string, double>>();
  s.final_lr = j.at("final_lr");
  return s;
}

Trainer::Trainer(const ExperimentSpec& spec, Stream& stream, Classifier model, Strategy& strategy)
    : spec_(spec), stream_(stream), model_(std::move(model)), strategy_(strategy) {
  scheduler_ = spec_.train.scheduler.build();
}

Trainer::TrainingSet Trainer::training_set(int task) const {
  TrainingSet set;
  set.tasks = strategy_.training_tasks(task, stream_.num_tasks());
  std::vector<torch::Tensor> rows, ids;
  int transforms = 0;
  for (int t : set.tasks) {
    const Task& tk = stream_.tasks.at(t);
    rows.push_back(tk.train_rows);
    ids.push_back(torch::full({tk.train_rows.size(0)}, t, tk.train_rows.options()));
    transforms += tk.transform ? 1 : 0;
  }
  if (!rows.empty()) {
    set.rows = torch::cat(rows);
    set.task_ids = torch::cat(ids);
  }
  set.single_transform = set.tasks.size() <= 1 || transforms == 0;
  return set;
}

torch::Tensor Trainer::batch_inputs(const TrainingSet& set, const torch::Tensor& positions,
                                    const torch::Tensor& rows, const Task& task) const {
  if (set.single_transform) return stream_.inputs(stream_.train, rows, task);
  // Domain-IL over several tasks (cumulative/joint): each sample gets its own task's transform.
  torch::Tensor ids = set.task_ids.index_select(0, positions);
  std::vector<int64_t> shape = {rows.size(0)};
  shape.insert(shape.end(), stream_.input_shape.begin(), stream_.input_shape.end());
  torch::Tensor x = torch::empty(shape, torch::TensorOptions(torch::kFloat32).device(stream_.device()));
  for (int t : set.tasks) {
    torch::Tensor sel = ids.eq(t).nonzero().view(-1);
    if (sel.numel() > 0) x.index_copy_(0, sel, stream_.inputs(stream_.train, rows.index_select(0, sel), stream_.tasks[t]));
  }
  return x;
}

void Trainer::ensure_optimizer(bool fresh) {
  if (optimizer_ && !fresh) return;
  optimizer_ = spec_.train.optimizer.build(model_->parameters());
  base_lr_ = get_lr(*optimizer_);
}

void Trainer::clip_gradients() const {
  // clip_grad_norm_ without its host sync: the clip coefficient stays a device tensor.
  std::vector<torch::Tensor> norms, grads;
  for (const auto& p : model_->parameters())
    if (p.grad().defined()) {
      grads.push_back(p.grad());
      norms.push_back(p.grad().norm());
    }
  if (grads.empty()) return;
  torch::Tensor total = torch::stack(norms).norm();
  torch::Tensor coef = (spec_.train.grad_clip / (total + 1e-6)).clamp_max(1.0);
  for (auto& g : grads) g.mul_(coef);
}

void Trainer::for_each_train_batch(int task, int64_t batch_size,
                                   const std::function<void(const torch::Tensor&, const torch::Tensor&)>& fn) const {
  const Task& tk = stream_.tasks.at(task);
  const int64_t n = tk.train_rows.size(0);
  for (int64_t start = 0; start < n; start += batch_size) {
    torch::Tensor rows = tk.train_rows.slice(0, start, std::min(n, start + batch_size));
    fn(stream_.inputs(stream_.train, rows, tk), stream_.train.labels.index_select(0, rows));
  }
}

TaskStats Trainer::train_task(int task) {
  const TrainSpec& ts = spec_.train;
  TaskStats stats;
  stats.task = task;
  TrainingSet set = training_set(task);
  stats.trained_on = set.tasks;
  const int64_t n = set.rows.defined() ? set.rows.size(0) : 0;
  const bool trains = n > 0 && !(ts.drop_last && n < ts.batch_size);
  if (trains) ensure_optimizer(ts.reset_optimizer == "every_task");

  TaskContext task_ctx{task, model_, stream_, trains ? optimizer_.get() : nullptr,
                       [this](int t, int64_t b, const auto& fn) { for_each_train_batch(t, b, fn); }};
  model_->train();
  strategy_.before_task(task_ctx);
  if (!trains) {
    strategy_.after_task(task_ctx);
    return stats;
  }

  const Task& current = stream_.tasks.at(task);
  const torch::Device device = stream_.device();
  torch::Tensor train_mask;  // additive logit mask for train.logits = seen | current
  if (ts.logits == "seen") train_mask = Evaluator::logit_mask(stream_.classes_of(0, task), stream_.num_classes, device);
  if (ts.logits == "current") train_mask = Evaluator::logit_mask(current.classes, stream_.num_classes, device);

  const int64_t B = ts.batch_size;
  const int64_t steps_per_epoch = ts.drop_last ? n / B : (n + B - 1) / B;
  const int64_t total_steps = ts.iterations > 0 ? ts.iterations : ts.epochs * steps_per_epoch;
  const int64_t epochs = (total_steps + steps_per_epoch - 1) / steps_per_epoch;
  const bool per_step_lr = scheduler_->interval == Scheduler::Interval::step;
  if (progress_) progress_->start("task " + std::to_string(task + 1) + "/" + std::to_string(stream_.num_tasks()), total_steps);

  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions(torch::kFloat32).device(device));
  std::map<std::string, torch::Tensor> term_sums;
  auto start = std::chrono::steady_clock::now();
  int64_t step = 0, samples = 0;
  for (int64_t epoch = 0; epoch < epochs && step < total_steps; ++epoch) {
    // Each epoch's order depends only on (seed, task, epoch): a resumed run reshuffles identically.
    at::Generator gen = make_generator(spec_.seed, {seed_purpose::shuffle, static_cast<uint64_t>(task),
                                                    static_cast<uint64_t>(epoch)});
    torch::Tensor order = torch::randperm(n, gen, torch::kInt64).to(device);
    if (!per_step_lr) set_lr(*optimizer_, scheduler_->lr(base_lr_, epoch, epochs));
    for (int64_t b = 0; b < steps_per_epoch && step < total_steps; ++b) {
      if (interrupt_requested()) throw Interrupted();
      if (per_step_lr) set_lr(*optimizer_, scheduler_->lr(base_lr_, step, total_steps));
      torch::Tensor positions = order.slice(0, b * B, std::min(n, (b + 1) * B));
      StepContext ctx{task, epoch, step, model_, *optimizer_, stream_, {}, {}, {}, {}, {}};
      torch::Tensor rows = set.rows.index_select(0, positions);
      ctx.x = batch_inputs(set, positions, rows, current);
      ctx.y = stream_.train.labels.index_select(0, rows);
      strategy_.before_forward(ctx);
      ctx.logits = model_->forward(ctx.x);
      ctx.loss = torch::cross_entropy_loss(train_mask.defined() ? ctx.logits + train_mask : ctx.logits, ctx.y);
      strategy_.loss_terms(ctx);
      strategy_.before_backward(ctx);
      optimizer_->zero_grad();
      ctx.loss.backward();
      strategy_.after_backward(ctx);
      if (ts.grad_clip > 0) clip_gradients();
      optimizer_->step();
      strategy_.after_step(ctx);

      loss_sum += ctx.loss.detach();
      for (auto& [name, term] : ctx.terms) {
        auto it = term_sums.find(name);
        if (it == term_sums.end()) term_sums.emplace(name, term.clone());
        else it->second += term;
      }
      samples += ctx.x.size(0);
      ++step;
      if (!first_step_) first_step_ = std::chrono::steady_clock::now();
      if (on_step_) on_step_(task, step);
      if (progress_) progress_->update(step, samples);
    }
  }
  if (progress_) progress_->finish();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats.steps = step;
  stats.samples = samples;
  stats.epochs = epochs;
  stats.mean_loss = loss_sum.item<double>() / static_cast<double>(std::max<int64_t>(1, step));
  for (auto& [name, sum] : term_sums) stats.terms[name] = sum.item<double>() / static_cast<double>(std::max<int64_t>(1, step));
  stats.final_lr = get_lr(*optimizer_);
  strategy_.after_task(task_ctx);
  return stats;
}

void Trainer::save_checkpoint(const std::string& path, const nlohmann::json& state) const {
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive, strategy_archive;
  model_->save(model_archive);
  archive.write("model", model_archive);
  archive.write("has_optimizer", c10::IValue(static_cast<bool>(optimizer_)));
  if (optimizer_) {
    optimizer_->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
  }
  strategy_.save(strategy_archive);
  archive.write("strategy", strategy_archive);
  archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  const torch::Device device = stream_.device();
  if (!device.is_cpu()) archive.write("rng_device", at::globalContext().defaultGenerator(device).get_state());
  archive.write("state", c10::IValue(state.dump()));
  write_atomic_with(path, [&](const std::string& tmp) { archive.save_to(tmp); });
}

nlohmann::json Trainer::load_checkpoint(const std::string& path) {
  torch::serialize::InputArchive archive, model_archive, strategy_archive;
  archive.load_from(path, stream_.device());
  archive.read("model", model_archive);
  model_->load(model_archive);
  c10::IValue has_optimizer;
  archive.read("has_optimizer", has_optimizer);
  if (has_optimizer.toBool()) {
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    ensure_optimizer(true);
    optimizer_->load(optimizer_archive);
  }
  archive.read("strategy", strategy_archive);
  strategy_.load(strategy_archive);
  torch::Tensor rng;
  archive.read("rng_cpu", rng);
  at::Generator cpu_rng = at::detail::getDefaultCPUGenerator();  // set_state() is non-const
  cpu_rng.set_state(rng.to(torch::kCPU));
  const torch::Device device = stream_.device();
  if (!device.is_cpu()) {
    torch::Tensor device_rng;
    if (archive.try_read("rng_device", device_rng)) {
      at::Generator gen = at::globalContext().defaultGenerator(device);
      gen.set_state(device_rng.to(torch::kCPU));
    }
  }
  c10::IValue state;
  archive.read("state", state);
  return nlohmann::json::parse(state.toStringRef());
}

}  // namespace clrun
