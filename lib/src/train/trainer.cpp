// The training loop. Hot path rules: tensors stay on the device, batches are index_select-ed
// from the in-memory split, no .item() per step (the loss is summed on the device).
#include "clrun/train/trainer.hpp"

#include <cmath>
#include <map>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "clrun/core/device.hpp"
#include "clrun/core/error.hpp"
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

Trainer::Trainer(const ExperimentSpec& spec, Stream& stream, std::shared_ptr<Model> model, Strategy& strategy,
                 ModelFactory make_model, const World* world)
    : spec_(spec), world_(world), stream_(stream), model_(std::move(model)), strategy_(strategy) {
  scheduler_ = spec_.train.scheduler.build();
  strategy_.setup(StrategyEnv{spec_.seed, &stream_, stream_.device(), std::move(make_model), model_.get(), world_});
  if (world_) {  // every rank starts from rank 0's weights, adapters a strategy added included
    std::vector<torch::Tensor> state = model_->parameters();
    for (const auto& b : model_->buffers()) state.push_back(b);
    torch::NoGradGuard no_grad;
    world_->broadcast(state);
  }
}

// ---- data ----------------------------------------------------------------------------------

Trainer::TrainingSet Trainer::training_set(int task) const {
  TrainingSet set;
  set.tasks = strategy_.training_tasks(task, stream_.num_tasks());
  std::vector<torch::Tensor> rows, ids;
  int transforms = 0;
  for (int t : set.tasks) {
    const Task& tk = stream_.tasks.at(t);
    rows.push_back(strategy_.training_rows(task, t, stream_));
    ids.push_back(torch::full({rows.back().size(0)}, t, tk.train_rows.options()));
    transforms += tk.transform ? 1 : 0;
  }
  if (!rows.empty()) {
    set.rows = torch::cat(rows);
    set.task_ids = torch::cat(ids);
  }
  set.single_transform = set.tasks.size() <= 1 || transforms == 0;
  return set;
}

Batch Trainer::make_batch(const TrainingSet& set, const torch::Tensor& positions, const Task& current,
                          at::Generator* train_transforms) const {
  // Several domain-IL tasks at once (cumulative/joint): each row gets its own task's transform.
  return stream_.make_batch(stream_.train, set.rows.index_select(0, positions), set.task_ids.index_select(0, positions),
                            set.single_transform ? std::vector<int>{current.index} : set.tasks, train_transforms);
}

torch::Tensor Trainer::group_by_length(const torch::Tensor& order, const TrainingSet& set, int64_t megabatch) const {
  // Source lengths of the set's rows (the stored ids are right-padded with 0, which no token is).
  const torch::Tensor lengths = stream_.train.images.index_select(0, set.rows.cpu()).ne(0).sum(1);
  std::vector<torch::Tensor> chunks;
  for (int64_t start = 0; start < order.size(0); start += megabatch) {
    torch::Tensor chunk = order.slice(0, start, std::min(order.size(0), start + megabatch));
    torch::Tensor by_length = std::get<1>(lengths.index_select(0, chunk).sort(/*stable=*/true, 0, /*descending=*/true));
    chunks.push_back(chunk.index_select(0, by_length));
  }
  return torch::cat(chunks);
}

torch::Tensor Trainer::loss_masks(int task) const {
  const std::string& scope = spec_.train.logits;
  if (scope == "all") return {};
  std::vector<torch::Tensor> rows;
  torch::Tensor seen;
  if (scope == "seen") seen = Evaluator::logit_mask(stream_.classes_of(0, task), stream_.num_classes, stream_.device());
  for (const Task& t : stream_.tasks)
    rows.push_back(scope == "seen" ? seen : Evaluator::logit_mask(t.classes, stream_.num_classes, stream_.device()));
  return torch::stack(rows);
}

// ---- optimizer -----------------------------------------------------------------------------

void Trainer::prepare_optimizer(const std::vector<ParamGroup>& groups, bool fresh) {
  std::set<const void*> trained;
  for (const auto& g : groups)
    for (const auto& p : g.params) trained.insert(p.unsafeGetTensorImpl());
  for (auto& p : model_->parameters()) {
    const bool on = trained.count(p.unsafeGetTensorImpl()) > 0;
    p.requires_grad_(on);
    if (!on) p.mutable_grad() = torch::Tensor();  // frozen: no gradient, so no decay or momentum moves it
  }
  for (const auto& g : groups)
    for (const auto& p : g.params)
      if (!p.is_leaf()) throw std::logic_error("a parameter group holds a non-leaf tensor");

  // A kept optimizer (reset_optimizer: never) must hold exactly these groups, else it is rebuilt.
  bool same = optimizer_ && optimizer_->param_groups().size() == groups.size();
  for (std::size_t i = 0; same && i < groups.size(); ++i) {
    const auto& have = optimizer_->param_groups()[i].params();
    same = have.size() == groups[i].params.size();
    for (std::size_t k = 0; same && k < have.size(); ++k)
      same = have[k].unsafeGetTensorImpl() == groups[i].params[k].unsafeGetTensorImpl();
  }
  if (!fresh && optimizer_ && !same)
    spdlog::warn("the strategy changed its parameter groups: the optimizer is rebuilt and its state reset");
  if (!fresh && same) return;
  std::vector<torch::optim::OptimizerParamGroup> torch_groups;
  lr_scales_.clear();
  for (const auto& g : groups) {
    torch_groups.emplace_back(g.params);
    lr_scales_.push_back(g.lr_scale);
  }
  optimizer_ = spec_.train.optimizer.build(torch_groups);
  base_lr_ = optimizer_->defaults().get_lr();
  set_learning_rate(base_lr_);
}

void Trainer::set_learning_rate(double lr) {
  auto& groups = optimizer_->param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i)
    groups[i].options().set_lr(lr * (i < lr_scales_.size() ? lr_scales_[i] : 1.0));
}

void Trainer::zero_grad() {
  for (auto& p : model_->parameters()) p.mutable_grad() = torch::Tensor();
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
  // On the CPU reading the coefficient costs nothing (no queue to wait for): skip the pass over
  // every gradient when it is 1 (nothing clipped; multiplying by 1 would change no bit), as
  // torch's clip_grad_norm_ does.
  if (stream_.device().is_cpu() && coef.item<float>() == 1.0f) return;
  for (auto& g : grads) g.mul_(coef);
}

// ---- the loop ------------------------------------------------------------------------------

void Trainer::add_terms(Totals& totals, const std::vector<std::pair<std::string, torch::Tensor>>& terms,
                        std::size_t from, double scale) {
  for (std::size_t i = from; i < terms.size(); ++i) {
    const auto& [name, term] = terms[i];
    auto it = totals.terms.find(name);
    if (it == totals.terms.end()) totals.terms.emplace(name, term * scale);
    else it->second += term * scale;
  }
}

bool Trainer::reduce_gradients(bool stop) {
  // One flag per trained parameter (1 where this rank has a gradient) and the stop flag travel in
  // the gradients' bucket: no extra collective.
  std::vector<torch::Tensor> trained, grads;
  std::vector<float> flags;
  for (auto& p : model_->parameters())
    if (p.requires_grad()) {
      flags.push_back(p.grad().defined() ? 1.f : 0.f);
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      trained.push_back(p);
      grads.push_back(p.grad());
    }
  flags.push_back(stop ? 1.f : 0.f);
  torch::Tensor reached = torch::tensor(flags).to(stream_.device());
  grads.push_back(reached);
  world_->all_reduce_sum(grads);
  reached = reached.cpu();
  const float* any = reached.data_ptr<float>();
  for (std::size_t i = 0; i < trained.size(); ++i)
    if (any[i] == 0) trained[i].mutable_grad() = torch::Tensor();  // no rank reached it
  return any[trained.size()] > 0;
}

void Trainer::reduce_totals(Totals& totals) const {
  std::vector<torch::Tensor> sums = {totals.loss,
                                     torch::full({}, static_cast<double>(totals.samples), totals.loss.options())};
  for (auto& [name, sum] : totals.terms) sums.push_back(sum);
  world_->all_reduce_sum(sums);
  totals.samples = static_cast<int64_t>(std::llround(sums[1].item<double>()));
}

void Trainer::step(int task, int64_t epoch, std::vector<Batch> micro, Totals& totals) {
  // One optimizer step over `micro` (train.accumulate_steps micro-batches): the per-batch hooks
  // run per micro-batch, gradients add up (each loss scaled by 1/count), and after_backward /
  // after_step see one context holding every micro-batch's current rows.
  // Data parallel: each micro-batch is the global one; this rank keeps its contiguous shard and
  // weights its loss by its share of the loss units, so that the gradients summed over the ranks
  // are the single process's.
  zero_grad();
  std::vector<StepContext> done;
  for (Batch& global : micro) {
    Batch batch = global;
    std::vector<std::pair<int64_t, int64_t>> spans;
    if (world_) {
      const auto [begin, end] = world_->shard(global.size());
      batch = global.rows(begin, end);
      spans.emplace_back(begin, end);
    }
    StepContext ctx{task, epoch, totals.steps, *model_, *optimizer_, stream_, loss_fn_, std::move(batch), 0,
                    std::move(global), 1.0, {}, {}, {}, std::move(spans)};
    ctx.current_rows = ctx.batch.size();
    if (world_)
      ctx.share = static_cast<double>(stream_.loss_units(ctx.batch)) / static_cast<double>(stream_.loss_units(ctx.global_current));
    // An empty shard (fewer rows than ranks) has no forward or backward, but runs the hooks that
    // draw from a strategy's generator or reduce over the ranks, so that every rank stays in step.
    strategy_.before_forward(ctx);
    const bool rows = ctx.batch.size() > 0;
    if (rows) {
      AutocastGuard autocast(spec_.train.precision == "bf16", stream_.device());
      ctx.output = model_->forward(ctx.batch);
      ctx.loss = ctx.task_loss(ctx.output, ctx.batch);
      strategy_.loss_terms(ctx);
    }
    strategy_.before_backward(ctx);
    if (rows) {
      const double weight = ctx.share / static_cast<double>(micro.size());
      (weight == 1.0 ? ctx.loss : ctx.loss * weight).backward();
      totals.loss += ctx.loss.detach() * weight;
      add_terms(totals, ctx.terms, 0, weight);
      totals.samples += ctx.batch.size();
    }
    done.push_back(std::move(ctx));
  }
  const bool stop = world_ && reduce_gradients(interrupt_requested());
  StepContext& ctx = done.size() == 1 ? done[0] : merge_micro_batches(done);
  // Penalties that write their gradient themselves (EWC, SI) add their term here, once per step
  // (data parallel: every rank adds the same term, so each counts its 1/world share).
  const std::size_t before = ctx.terms.size();
  strategy_.after_backward(ctx);
  const double share = world_ ? 1.0 / world_->size() : 1.0;
  for (std::size_t i = before; i < ctx.terms.size(); ++i) totals.loss += ctx.terms[i].second * share;
  add_terms(totals, ctx.terms, before, share);
  if (spec_.train.grad_clip > 0) clip_gradients();
  optimizer_->step();
  strategy_.after_step(ctx);
  ++totals.steps;
  if (stop) throw Interrupted();  // every rank stops after the same step
}

StepContext& Trainer::merge_micro_batches(std::vector<StepContext>& micro) const {
  std::vector<Batch> batches, globals;
  std::vector<torch::Tensor> outputs, losses;
  std::vector<std::pair<int64_t, int64_t>> spans;
  int64_t offset = 0;  // of each micro-batch in the merged global_current
  for (StepContext& m : micro) {
    globals.push_back(m.global_current);
    for (const auto& [begin, end] : m.shard_spans) spans.emplace_back(offset + begin, offset + end);
    offset += m.global_current.size();
    if (!m.output.defined()) continue;  // an empty data-parallel shard
    batches.push_back(m.batch.head(m.current_rows));
    outputs.push_back(m.output.detach().narrow(0, 0, m.current_rows));
    losses.push_back(m.loss.detach());
  }
  StepContext& merged = micro.back();
  merged.global_current = Batch::cat(globals);
  merged.shard_spans = std::move(spans);
  if (batches.empty()) return merged;
  merged.batch = Batch::cat(batches);
  merged.current_rows = merged.batch.size();
  merged.output = torch::cat(outputs);
  merged.loss = torch::stack(losses).mean();
  return merged;
}

void Trainer::check_finite(const Totals& totals, int task, int64_t epoch) const {
  torch::Tensor loss = totals.loss;
  if (world_) {
    loss = loss.clone();
    world_->all_reduce_sum({loss});
  }
  if (std::isfinite(loss.item<double>())) return;
  if (progress_) progress_->finish();
  throw Diverged(task, epoch, totals.steps);
}

TaskStats Trainer::train_task(int task) {
  const TrainSpec& ts = spec_.train;
  TaskStats stats;
  stats.task = task;
  TrainingSet set = training_set(task);
  stats.trained_on = set.tasks;
  const int64_t n = set.rows.defined() ? set.rows.size(0) : 0;
  const bool trains = n > 0 && !(ts.drop_last && n < ts.batch_size);
  loss_fn_.masks = loss_masks(task);

  TaskContext task_ctx{task, *model_, stream_, loss_fn_, nullptr,
                       [this](int t, int64_t b, int64_t limit, const auto& fn) { for_each_train_batch(stream_, t, b, limit, fn); }};
  model_->train();
  strategy_.before_task(task_ctx);
  if (!trains) {
    strategy_.after_task(task_ctx);
    return stats;
  }
  prepare_optimizer(strategy_.parameter_groups(task_ctx), ts.reset_optimizer == "every_task");
  task_ctx.optimizer = optimizer_.get();

  const Task& current = stream_.tasks.at(task);
  const torch::Device device = stream_.device();
  const int64_t B = ts.batch_size, K = ts.accumulate_steps;
  const int64_t batches_per_epoch = ts.drop_last ? n / B : (n + B - 1) / B;
  const int64_t steps_per_epoch = (batches_per_epoch + K - 1) / K;
  const int64_t task_epochs = current.epochs > 0 ? current.epochs : ts.epochs;
  const int64_t total_steps = ts.iterations > 0 ? ts.iterations : task_epochs * steps_per_epoch;
  const int64_t epochs = (total_steps + steps_per_epoch - 1) / steps_per_epoch;
  const bool per_step_lr = scheduler_->interval == Scheduler::Interval::step;
  if (progress_) progress_->start("task " + std::to_string(task + 1) + "/" + std::to_string(stream_.num_tasks()), total_steps);

  Totals totals;
  totals.loss = torch::zeros({}, torch::TensorOptions(torch::kFloat32).device(device));
  auto start = std::chrono::steady_clock::now();
  for (int64_t epoch = 0; epoch < epochs && totals.steps < total_steps; ++epoch) {
    // Each epoch's order depends only on (seed, task, epoch): a resumed run reshuffles identically.
    at::Generator gen = make_generator(spec_.seed, {seed_purpose::shuffle, static_cast<uint64_t>(task),
                                                    static_cast<uint64_t>(epoch)});
    torch::Tensor order = torch::randperm(n, gen, torch::kInt64);
    if (ts.group_by_length && stream_.is_text()) order = group_by_length(order, set, ts.batch_size * 50);
    order = order.to(device);
    if (!per_step_lr) set_learning_rate(scheduler_->lr(base_lr_, epoch, epochs));
    for (int64_t b = 0; b < steps_per_epoch && totals.steps < total_steps; ++b) {
      if (!world_ && interrupt_requested()) throw Interrupted();  // data parallel: decided in step()
      if (per_step_lr) set_learning_rate(scheduler_->lr(base_lr_, totals.steps, total_steps));
      std::vector<Batch> micro;
      for (int64_t m = b * K; m < std::min(batches_per_epoch, (b + 1) * K); ++m) {
        // Random image transforms draw from (seed, task, epoch, batch) alone, like the shuffle:
        // a resumed run augments identically; without them nothing is drawn.
        std::optional<at::Generator> augment;
        if (stream_.has_train_transforms())
          augment = make_generator(spec_.seed, {seed_purpose::train_transform, static_cast<uint64_t>(task),
                                                static_cast<uint64_t>(epoch), static_cast<uint64_t>(m)});
        micro.push_back(make_batch(set, order.slice(0, m * B, std::min(n, (m + 1) * B)), current,
                                   augment ? &*augment : nullptr));
      }
      step(task, epoch, std::move(micro), totals);
      if (!first_step_) first_step_ = std::chrono::steady_clock::now();
      if (on_step_) on_step_(task, totals.steps);
      // The loss sum stays on the device; it is read (one host sync) only when the progress
      // display updates and at the end of every epoch. Non-finite means the run diverged.
      if (progress_ && progress_->update(totals.steps, totals.samples) && !world_) check_finite(totals, task, epoch);
    }
    check_finite(totals, task, epoch);
  }
  if (progress_) progress_->finish();
  if (world_) {
    reduce_totals(totals);
    torch::NoGradGuard no_grad;
    world_->broadcast(model_->buffers());  // BatchNorm statistics: rank 0's, as DDP keeps them
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats.steps = totals.steps;
  stats.samples = totals.samples;
  stats.epochs = epochs;
  const double steps = static_cast<double>(std::max<int64_t>(1, totals.steps));
  stats.mean_loss = totals.loss.item<double>() / steps;
  for (auto& [name, sum] : totals.terms) stats.terms[name] = sum.item<double>() / steps;
  stats.final_lr = get_lr(*optimizer_);
  strategy_.after_task(task_ctx);
  return stats;
}

// ---- checkpoint ----------------------------------------------------------------------------

void Trainer::save_checkpoint(const std::string& path, const nlohmann::json& state) const {
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive, strategy_archive;
  model_->save(model_archive);
  archive.write("model", model_archive);
  archive.write("has_optimizer", c10::IValue(static_cast<bool>(optimizer_)));
  if (optimizer_) {
    optimizer_->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    archive.write("lr_scales", torch::tensor(lr_scales_, torch::kFloat64));
    // Each group's parameters as indices into model.parameters(), so that a resumed run
    // rebuilds the same groups (a strategy's head group, SoTU's tuned subset) before loading.
    std::map<const void*, int64_t> index;
    auto params = model_->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) index[params[i].unsafeGetTensorImpl()] = static_cast<int64_t>(i);
    std::vector<torch::Tensor> groups;
    for (const auto& g : optimizer_->param_groups()) {
      std::vector<int64_t> ids;
      for (const auto& p : g.params()) ids.push_back(index.at(p.unsafeGetTensorImpl()));
      groups.push_back(torch::tensor(ids, torch::kInt64));
    }
    write_tensors(archive, "optimizer_groups", groups);
  }
  strategy_.save_state(strategy_archive);
  archive.write("strategy", strategy_archive);
  archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state());
  const torch::Device device = stream_.device();
  if (!device.is_cpu()) archive.write("rng_device", at::globalContext().defaultGenerator(device).get_state());
  archive.write("state", c10::IValue(state.dump()));
  save_archive_atomic(path, archive);
}

nlohmann::json Trainer::load_checkpoint(const std::string& path) {
  torch::serialize::InputArchive archive, model_archive, strategy_archive;
  archive.load_from(path, stream_.device());
  archive.read("model", model_archive);
  model_->load(model_archive);
  c10::IValue has_optimizer;
  archive.read("has_optimizer", has_optimizer);
  if (has_optimizer.toBool()) {
    // The kept optimizer holds the groups that trained last, rebuilt as saved; a strategy
    // whose next task trains other groups gets it rebuilt there.
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    std::vector<double> scales;
    torch::Tensor saved_scales;
    if (archive.try_read("lr_scales", saved_scales)) {
      saved_scales = saved_scales.to(torch::kCPU);
      scales.assign(saved_scales.data_ptr<double>(), saved_scales.data_ptr<double>() + saved_scales.numel());
    }
    std::vector<ParamGroup> groups;
    auto params = model_->parameters();
    torch::serialize::InputArchive probe;
    if (archive.try_read("optimizer_groups", probe)) {
      auto saved = read_tensors(archive, "optimizer_groups", torch::kCPU);
      for (std::size_t g = 0; g < saved.size(); ++g) {
        ParamGroup group{{}, g < scales.size() ? scales[g] : 1.0};
        for (int64_t i : std::vector<int64_t>(saved[g].data_ptr<int64_t>(), saved[g].data_ptr<int64_t>() + saved[g].numel()))
          group.params.push_back(params.at(static_cast<std::size_t>(i)));
        groups.push_back(std::move(group));
      }
    } else {  // checkpoints written before the groups were saved: every trainable parameter
      std::vector<torch::Tensor> trainable;
      for (auto& p : params)
        if (p.requires_grad()) trainable.push_back(p);
      groups.push_back(ParamGroup{trainable, 1.0});
    }
    prepare_optimizer(groups, true);
    optimizer_->load(optimizer_archive);
    if (!scales.empty()) lr_scales_ = scales;
  }
  archive.read("strategy", strategy_archive);
  strategy_.load_state(strategy_archive);
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
