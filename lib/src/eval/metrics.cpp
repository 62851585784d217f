// Metric formulas (see ../shared/specs/protocols-and-metrics.md, "Metrics").
#include "clrun/eval/metrics.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace clrun {

AccuracyMatrix::AccuracyMatrix(std::vector<int64_t> test_sizes) : test_sizes_(std::move(test_sizes)) {}

void AccuracyMatrix::set_random_init(std::vector<int64_t> correct) {
  if (correct.size() != test_sizes_.size()) throw std::invalid_argument("random-init row has the wrong length");
  random_init_ = std::move(correct);
}

void AccuracyMatrix::add_row(std::vector<int64_t> correct) {
  if (correct.size() != test_sizes_.size()) throw std::invalid_argument("accuracy row has the wrong length");
  correct_.push_back(std::move(correct));
}

namespace {
double percent(int64_t correct, int64_t total) {
  return total > 0 ? 100.0 * static_cast<double>(correct) / static_cast<double>(total) : 0.0;
}
double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}
}  // namespace

double AccuracyMatrix::accuracy(int row, int task) const {
  if (!evaluated(row, task)) return std::numeric_limits<double>::quiet_NaN();
  return percent(correct_.at(row).at(task), test_sizes_.at(task));
}

double AccuracyMatrix::random_init_accuracy(int task) const { return percent(random_init_.at(task), test_sizes_.at(task)); }

double AccuracyMatrix::samplewise_accuracy(int row, int last) const {
  int64_t correct = 0, total = 0;
  for (int i = 0; i <= last; ++i) {
    if (!evaluated(row, i)) return std::numeric_limits<double>::quiet_NaN();
    correct += correct_.at(row).at(i), total += test_sizes_.at(i);
  }
  return percent(correct, total);
}

namespace {
/// Counts with kNotEvaluated as null, and back.
nlohmann::json counts_json(const std::vector<int64_t>& row) {
  nlohmann::json j = nlohmann::json::array();
  for (int64_t c : row) j.push_back(c == AccuracyMatrix::kNotEvaluated ? nlohmann::json(nullptr) : nlohmann::json(c));
  return j;
}
std::vector<int64_t> counts_from_json(const nlohmann::json& j) {
  std::vector<int64_t> row;
  for (const auto& c : j) row.push_back(c.is_null() ? AccuracyMatrix::kNotEvaluated : c.get<int64_t>());
  return row;
}
}  // namespace

nlohmann::json AccuracyMatrix::to_json() const {
  nlohmann::json matrix = nlohmann::json::array(), correct = nlohmann::json::array();
  for (int t = 0; t < num_rows(); ++t) {
    nlohmann::json row = nlohmann::json::array();
    for (int i = 0; i < num_tasks(); ++i)
      row.push_back(evaluated(t, i) ? nlohmann::json(accuracy(t, i)) : nlohmann::json(nullptr));
    matrix.push_back(row);
    correct.push_back(counts_json(correct_[t]));
  }
  nlohmann::json j = {{"matrix", matrix}, {"correct", correct}, {"test_sizes", test_sizes_}};
  if (has_random_init()) {
    std::vector<double> init;
    for (int i = 0; i < num_tasks(); ++i) init.push_back(random_init_accuracy(i));
    j["random_init"] = init;
    j["random_init_correct"] = random_init_;
  } else {
    j["random_init"] = nullptr;
  }
  return j;
}

AccuracyMatrix AccuracyMatrix::from_json(const nlohmann::json& j) {
  AccuracyMatrix m(j.at("test_sizes").get<std::vector<int64_t>>());
  for (const auto& row : j.at("correct")) m.add_row(counts_from_json(row));
  if (j.contains("random_init_correct")) m.set_random_init(j.at("random_init_correct").get<std::vector<int64_t>>());
  return m;
}

Metrics compute_metrics(const AccuracyMatrix& m) {
  Metrics out;
  const int T = m.num_rows();
  if (T == 0) return out;
  const int last = T - 1;
  std::vector<double> final_row;
  for (int i = 0; i < T; ++i) final_row.push_back(m.accuracy(last, i));
  out.final_average_accuracy = mean(final_row);
  out.final_accuracy_samplewise = m.samplewise_accuracy(last, last);
  for (int t = 0; t < T; ++t) {
    std::vector<double> seen;
    for (int i = 0; i <= t; ++i) seen.push_back(m.accuracy(t, i));
    out.average_accuracy_curve.push_back(mean(seen));
    out.incremental_accuracy_curve.push_back(m.samplewise_accuracy(t, t));
  }
  out.average_incremental_accuracy = mean(out.incremental_accuracy_curve);
  if (T >= 2) {
    std::vector<double> forgetting, bwt;
    for (int i = 0; i < last; ++i) {
      double best = m.accuracy(i, i);  // max over t in [i, T-2]: rows before i had not learned task i
      for (int t = i + 1; t < last; ++t) best = std::max(best, m.accuracy(t, i));
      forgetting.push_back(best - m.accuracy(last, i));
      bwt.push_back(m.accuracy(last, i) - m.accuracy(i, i));
    }
    out.forgetting = mean(forgetting);
    out.bwt = mean(bwt);
    bool future_scored = true;  // eval.future_tasks: false leaves R[i-1][i] unscored
    for (int i = 1; i < T; ++i) future_scored = future_scored && m.evaluated(i - 1, i);
    if (m.has_random_init() && future_scored) {
      std::vector<double> fwt;
      for (int i = 1; i < T; ++i) fwt.push_back(m.accuracy(i - 1, i) - m.random_init_accuracy(i));
      out.fwt = mean(fwt);
    }
  }
  return out;
}

nlohmann::json to_json(const Metrics& m) {
  auto opt = [](const std::optional<double>& x) { return x ? nlohmann::json(*x) : nlohmann::json(nullptr); };
  return {{"final_average_accuracy", m.final_average_accuracy},
          {"final_accuracy_samplewise", m.final_accuracy_samplewise},
          {"average_incremental_accuracy", m.average_incremental_accuracy},
          {"forgetting", opt(m.forgetting)},
          {"bwt", opt(m.bwt)},
          {"fwt", opt(m.fwt)},
          {"average_accuracy_curve", m.average_accuracy_curve},
          {"incremental_accuracy_curve", m.incremental_accuracy_curve}};
}

}  // namespace clrun
