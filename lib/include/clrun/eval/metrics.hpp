// Accuracy matrices and the named metrics of the protocol spec, all computed here and only here.
// R[t][i] = accuracy (percent) on task i's test set after training task t.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

namespace clrun {

class AccuracyMatrix {
 public:
  /// A correct count for a task that was not scored (eval.future_tasks: false leaves the tasks
  /// not yet trained unscored): null in JSON, NaN from accuracy().
  static constexpr int64_t kNotEvaluated = -1;

  AccuracyMatrix() = default;
  /// `test_sizes[i]` = number of test samples of task i.
  explicit AccuracyMatrix(std::vector<int64_t> test_sizes);

  void set_random_init(std::vector<int64_t> correct);
  void add_row(std::vector<int64_t> correct);

  int num_tasks() const { return static_cast<int>(test_sizes_.size()); }
  int num_rows() const { return static_cast<int>(correct_.size()); }
  bool has_random_init() const { return !random_init_.empty(); }
  bool evaluated(int row, int task) const { return correct_.at(row).at(task) != kNotEvaluated; }
  double accuracy(int row, int task) const;     ///< R[row][task] in percent; NaN if not evaluated
  double random_init_accuracy(int task) const;  ///< untrained model on task, percent
  /// Sample-weighted accuracy on the union of tasks 0..last after training `row`.
  double samplewise_accuracy(int row, int last) const;

  nlohmann::json to_json() const;  ///< matrix, random_init, correct counts, test sizes
  static AccuracyMatrix from_json(const nlohmann::json& j);

 private:
  std::vector<int64_t> test_sizes_;
  std::vector<std::vector<int64_t>> correct_;
  std::vector<int64_t> random_init_;
};

/// The named metrics after the matrix's last row (T = rows so far, over tasks 0..T-1).
/// Metrics that are undefined (forgetting/bwt with one task, fwt without a random-init row or
/// with one task, or when a task was not scored before it was trained: eval.future_tasks false)
/// are empty and written as null.
struct Metrics {
  double final_average_accuracy = 0;
  double final_accuracy_samplewise = 0;
  double average_incremental_accuracy = 0;
  std::optional<double> forgetting, bwt, fwt;
  std::vector<double> average_accuracy_curve;      ///< mean_{i<=t} R[t][i], per t
  std::vector<double> incremental_accuracy_curve;  ///< samplewise accuracy on tasks 0..t, per t
};

Metrics compute_metrics(const AccuracyMatrix& m);
nlohmann::json to_json(const Metrics& m);

}  // namespace clrun
