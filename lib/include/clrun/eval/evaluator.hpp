// Evaluation after each task: one no-grad pass over every task's test set, scored twice for
// class-IL (task-agnostic over the classes seen so far, and task-aware) and once otherwise.
#pragma once
#include <cstdint>
#include <vector>

#include "clrun/core/world.hpp"
#include "clrun/models/model.hpp"
#include "clrun/strategies/strategy.hpp"
#include "clrun/streams/stream.hpp"

namespace clrun {

struct EvalRow {
  std::vector<int64_t> correct;             ///< the scenario's scoring, per task
  std::vector<int64_t> correct_task_aware;  ///< class-IL only: logits restricted to the task
  /// Text streams: each scored test row's generated answer as decoded and its exact-match
  /// verdict, per task (empty when not scored).
  struct Prediction {
    std::string text;
    bool correct = false;
  };
  std::vector<std::vector<Prediction>> predictions;
};

class Evaluator {
 public:
  /// `seen_only`: class-IL argmax over seen classes (eval_classes: seen) rather than all.
  /// `future_tasks` false: tasks after the trained one are not scored (eval.future_tasks).
  /// `max_new_tokens`: text streams' generation length limit; `bf16`: autocast (train.precision).
  /// `world` (data parallel): each rank scores its shard of every task's test rows and the
  /// counts are summed (text streams: every rank generates for every row, rank 0's answers are
  /// kept, since the predictions file needs them all).
  Evaluator(const Stream& stream, Strategy& strategy, int64_t batch_size, bool seen_only, bool future_tasks = true,
            int64_t max_new_tokens = 50, bool bf16 = false, const World* world = nullptr);

  /// Scores every task after training `trained_task` (-1: the untrained model). Class-IL scores
  /// task i over the classes of tasks 0..max(trained_task, i): a task not yet trained is scored
  /// over the classes it would be scored on once learned, which keeps fwt meaningful. Without
  /// future tasks, tasks i > trained_task get AccuracyMatrix::kNotEvaluated.
  /// Text streams: greedy generation, scored by exact match of the normalised answer with the
  /// row's label text (a row whose label is not in the task's label set never matches).
  EvalRow evaluate(Model& model, int trained_task);
  /// A row of kNotEvaluated (eval.when: last skips the rows before the last task).
  EvalRow skipped() const;
  /// Text streams: tokens generated so far (</s> included) and the seconds spent generating.
  int64_t generated_tokens() const { return generated_tokens_; }
  double generation_seconds() const { return generation_seconds_; }

  /// Additive logit mask: 0 for `classes`, a large negative number elsewhere.
  static torch::Tensor logit_mask(const std::vector<int64_t>& classes, int64_t num_classes, torch::Device device);

 private:
  const Stream& stream_;
  Strategy& strategy_;
  int64_t batch_size_;
  bool seen_only_;
  bool future_tasks_;
  int64_t max_new_tokens_;
  bool bf16_;
  const World* world_;
  mutable int64_t generated_tokens_ = 0;
  mutable double generation_seconds_ = 0;

  /// Correct count of `task` by generation; the decoded answers are appended to `predictions`.
  int64_t generate_and_score(Model& model, const Task& task, std::vector<EvalRow::Prediction>& predictions) const;
};

}  // namespace clrun
