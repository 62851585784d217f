// `cumulative`: at task t train on the training data of tasks 0..t, or on all of task t and a
// fixed share of each earlier task (`past_fraction`; MIGU's replay baseline mixes 2% of each
// past task into the later tasks' training data). The share of task i is drawn once from
// (run seed, i), so every later task mixes in the same rows.
#include <cmath>
#include <numeric>

#include <torch/torch.h>

#include "clrun/core/seed.hpp"
#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {

struct CumulativeOptions {
  double past_fraction = 1.0;

  template <class V>
  void fields(V& v) {
    v("past_fraction", past_fraction,
      "share of each earlier task's training rows trained on again (1 = all: incremental joint; MIGU's replay: 0.02)",
      in_range(0, 1));
  }
};

class Cumulative : public Strategy {
 public:
  Cumulative(const CumulativeOptions& o, uint64_t seed) : o_(o), seed_(seed) {}
  std::vector<int> training_tasks(int task, int) const override {
    std::vector<int> seen(task + 1);
    std::iota(seen.begin(), seen.end(), 0);
    return seen;
  }
  torch::Tensor training_rows(int task, int source, const Stream& stream) const override {
    const torch::Tensor& all = stream.tasks.at(source).train_rows;
    if (source == task || o_.past_fraction >= 1) return all;
    const int64_t n = all.size(0);
    const auto k = std::max<int64_t>(1, std::llround(o_.past_fraction * static_cast<double>(n)));
    at::Generator gen = make_generator(seed_, {seed_purpose::rehearsal_rows, static_cast<uint64_t>(source)});
    torch::Tensor pick = std::get<0>(torch::randperm(n, gen, torch::kInt64).slice(0, 0, std::min(k, n)).sort());
    return all.index_select(0, pick.to(all.device()));
  }
  nlohmann::json describe() const override { return {{"past_fraction", o_.past_fraction}}; }

 private:
  CumulativeOptions o_;
  uint64_t seed_;
};

}  // namespace

void register_cumulative(StrategyRegistry& registry) {
  registry.add<CumulativeOptions>("cumulative",
                                  "at task t train on tasks 0..t (incremental joint), or on task t and a fixed share of "
                                  "each earlier one (past_fraction: data-mixing replay)",
                                  [](const CumulativeOptions& o, uint64_t seed) { return std::make_shared<Cumulative>(o, seed); });
}

}  // namespace clrun
