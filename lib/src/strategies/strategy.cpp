// Strategy base: hook bookkeeping, the strategy generator, checkpoint helpers and defaults.
#include "clrun/strategies/strategy.hpp"

#include <chrono>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "clrun/components.hpp"
#include "clrun/core/seed.hpp"

namespace clrun {

Batch own_shard(const Batch& batch, const World* world) {
  if (!world) return batch;
  const auto [begin, end] = world->shard(batch.size());
  return batch.rows(begin, end);
}

torch::Tensor StepContext::gather_current(const torch::Tensor& local, const World* world) const {
  if (!world) return local;
  std::vector<int64_t> shape = local.sizes().vec();
  shape[0] = global_current.size();
  torch::Tensor all = torch::zeros(shape, local.options());  // other ranks' rows: 0 here, theirs after the sum
  int64_t offset = 0;
  for (const auto& [begin, end] : shard_spans) {
    all.slice(0, begin, end).copy_(local.slice(0, offset, offset + end - begin));
    offset += end - begin;
  }
  world->all_reduce_sum({all});
  return all;
}

const char* to_string(Hook hook) {
  static const char* const names[] = {"before_task",    "before_forward", "loss_terms",
                                      "before_backward", "after_backward", "after_step",
                                      "after_task",     "eval_logits",    "eval_forward"};
  return names[static_cast<std::size_t>(hook)];
}

std::vector<int> Strategy::training_tasks(int task, int) const { return {task}; }

torch::Tensor Strategy::training_rows(int, int source, const Stream& stream) const { return stream.tasks.at(source).train_rows; }

std::vector<ParamGroup> Strategy::parameter_groups(TaskContext& ctx) { return {ParamGroup{ctx.model.parameters(), 1.0}}; }

namespace {
template <class F>
double timed(F&& f) {
  auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

void Strategy::setup(const StrategyEnv& env) {
  env_ = env;
  rng_ = make_generator(env.seed, {seed_purpose::strategy});
  on_setup();
}

void Strategy::before_task(TaskContext& ctx) {
  count(Hook::before_task);
  task_hook_seconds_ += timed([&] { on_before_task(ctx); });
}

void Strategy::after_task(TaskContext& ctx) {
  count(Hook::after_task);
  task_hook_seconds_ += timed([&] { on_after_task(ctx); });
}

void Strategy::save_state(torch::serialize::OutputArchive& archive) const {
  archive.write("hook_counts", torch::tensor(std::vector<int64_t>(counts_.begin(), counts_.end())));
  archive.write("task_hook_seconds", c10::IValue(task_hook_seconds_));
  archive.write("rng", rng_.get_state());
  torch::serialize::OutputArchive own;
  save(own);
  archive.write("own", own);
}

void Strategy::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor counts;
  archive.read("hook_counts", counts);
  counts = counts.to(torch::kCPU);
  for (std::size_t h = 0; h < kNumHooks && h < static_cast<std::size_t>(counts.numel()); ++h)
    counts_[h] = counts[static_cast<int64_t>(h)].item<int64_t>();
  c10::IValue seconds;
  archive.read("task_hook_seconds", seconds);
  task_hook_seconds_ = seconds.toDouble();
  torch::Tensor state;
  archive.read("rng", state);
  rng_.set_state(state.to(torch::kCPU));
  torch::serialize::InputArchive own;
  archive.read("own", own);
  load(own);
}

nlohmann::json Strategy::hook_stats() const {
  nlohmann::json calls = nlohmann::json::object();
  for (std::size_t h = 0; h < kNumHooks; ++h) calls[to_string(static_cast<Hook>(h))] = counts_[h];
  return {{"calls", calls}, {"task_hook_seconds", task_hook_seconds_}};
}

std::shared_ptr<Strategy> StrategyBlock::build(uint64_t seed) const {
  return component.entry ? component.build(seed) : std::make_shared<Strategy>();
}

void to_json(nlohmann::json& j, const StrategyBlock& block) {
  j = block.component.entry ? block.component.resolved : nlohmann::json{{"name", "finetune"}};
}

StrategyBlock Decoder<StrategyBlock>::decode(const ConfigNode& node) {
  return {parse_component(registries().strategies, node, "finetune")};
}

void WrapperStrategy::save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive base;
  base_->save_state(base);
  archive.write("base", base);
}

void WrapperStrategy::load(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive base;
  archive.read("base", base);
  base_->load_state(base);
}

void write_tensors(torch::serialize::OutputArchive& archive, const std::string& key,
                   const std::vector<torch::Tensor>& tensors) {
  torch::serialize::OutputArchive list;
  list.write("size", c10::IValue(static_cast<int64_t>(tensors.size())));
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    list.write("defined_" + std::to_string(i), c10::IValue(tensors[i].defined()));
    if (tensors[i].defined()) list.write("t" + std::to_string(i), tensors[i]);
  }
  archive.write(key, list);
}

std::vector<torch::Tensor> read_tensors(torch::serialize::InputArchive& archive, const std::string& key,
                                        torch::Device device) {
  torch::serialize::InputArchive list;
  archive.read(key, list);
  c10::IValue size;
  list.read("size", size);
  std::vector<torch::Tensor> out(static_cast<std::size_t>(size.toInt()));
  for (std::size_t i = 0; i < out.size(); ++i) {
    c10::IValue defined;
    list.read("defined_" + std::to_string(i), defined);
    if (defined.toBool()) {
      list.read("t" + std::to_string(i), out[i]);
      out[i] = out[i].to(device);
    }
  }
  return out;
}

std::vector<torch::Tensor> snapshot_parameters(Model& model) {
  std::vector<torch::Tensor> out;
  for (const auto& p : model.parameters()) out.push_back(p.detach().clone());
  return out;
}

}  // namespace clrun
