// Strategy base: hook bookkeeping and defaults.
#include "clrun/strategies/strategy.hpp"

#include <chrono>

namespace clrun {

const char* to_string(Hook hook) {
  static const char* const names[] = {"before_task",    "before_forward", "loss_terms",
                                      "before_backward", "after_backward", "after_step",
                                      "after_task",     "eval_logits"};
  return names[static_cast<std::size_t>(hook)];
}

std::vector<int> Strategy::training_tasks(int task, int) const { return {task}; }

namespace {
template <class F>
double timed(F&& f) {
  auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

void Strategy::before_task(TaskContext& ctx) {
  count(Hook::before_task);
  task_hook_seconds_ += timed([&] { on_before_task(ctx); });
}

void Strategy::after_task(TaskContext& ctx) {
  count(Hook::after_task);
  task_hook_seconds_ += timed([&] { on_after_task(ctx); });
}

void Strategy::save(torch::serialize::OutputArchive&) const {}
void Strategy::load(torch::serialize::InputArchive&) {}

nlohmann::json Strategy::hook_stats() const {
  nlohmann::json calls = nlohmann::json::object();
  for (std::size_t h = 0; h < kNumHooks; ++h) calls[to_string(static_cast<Hook>(h))] = counts_[h];
  return {{"calls", calls}, {"task_hook_seconds", task_hook_seconds_}};
}

}  // namespace clrun
