// eval/: the evaluator's scoring rules on hand-made logits: class-IL over the classes of tasks
// 0..max(t, i), eval_classes: all, the task-aware matrix, and task-IL (logits masked to the task).
#include <catch2/catch.hpp>

#include "clrun/eval/evaluator.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

/// A "model" whose logits are a fixed table indexed by the test row (batch.index).
class TableModel : public Model {
 public:
  explicit TableModel(torch::Tensor table) : table_(std::move(table)) {}
  torch::Tensor forward(const Batch& batch) override { return table_.index_select(0, batch.index); }
  torch::Tensor row_loss(const torch::Tensor&, const Batch&, const torch::Tensor&) override {
    throw std::logic_error("not used");
  }
  torch::Tensor sample_targets(const torch::Tensor&, const Batch&, const torch::Tensor&, at::Generator&) override {
    throw std::logic_error("not used");
  }

 private:
  torch::Tensor table_;
};

/// Tiny test set: 4 test rows per class; row r has label r % 10 and within-class index k = r / 10.
/// Three tasks of two classes: {0, 1}, {2, 3}, {4, 5}. Each row's target gets logit 5; a
/// "distractor" class gets logit 10 depending on k:
///   k = 0: none                        -> right under every rule
///   k = 1: class 9 (in no task)        -> wrong only with eval_classes: all
///   k = 2: class 4 (task 2), rows of tasks 0 and 1 only -> wrong once task 2's classes are scored
///   k = 3: class 2 (task 1) for task 0's rows, class 0 (task 0) for the others
///                                      -> wrong in class-IL once the distractor is scored; never
///                                         in the task's own classes, so task-aware/task-IL are right
torch::Tensor hand_made_logits(int64_t rows) {
  torch::Tensor t = torch::zeros({rows, 10});
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t y = r % 10, k = r / 10, task = y / 2;
    t[r][y] = 5.0;
    int64_t d = -1;
    if (k == 1) d = 9;
    if (k == 2 && task < 2) d = 4;
    if (k == 3) d = task == 0 ? 2 : 0;
    if (d >= 0) t[r][d] = 10.0;
  }
  return t;
}

struct EvalRig {
  test::TempDir dir{"evaluator"};
  std::shared_ptr<Stream> stream;
  Strategy plain;
  explicit EvalRig(const std::string& scenario) {
    test::write_tiny_mnist(dir.path(), 2, 4, 12);
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", {parse_override("stream.scenario=" + scenario)});
    stream = spec.stream.build(spec.dataset.build(), spec.seed);
  }
  EvalRow evaluate(bool seen_only, int trained_task) {
    TableModel model(hand_made_logits(stream->test.size()));
    // a batch size that splits tasks across batches
    return Evaluator(*stream, plain, 3, seen_only).evaluate(model, trained_task);
  }
};

using Counts = std::vector<int64_t>;

}  // namespace

TEST_CASE("class-IL scores task i after task t over the classes of tasks 0..max(t, i)", "[eval][evaluator]") {
  EvalRig rig("class-il");
  REQUIRE(rig.stream->num_tasks() == 3);
  REQUIRE(rig.stream->tasks[0].test_rows.size(0) == 8);
  // (a rule over tasks 0..t alone would give 0 for tasks 1 and 2 in rows -1 and 0 (their own
  // classes masked out); one over every task's classes would give {4, 4, 6} in every row; one
  // over 0..i alone would give {8, 6, 6} after task 2)
  CHECK(rig.evaluate(true, -1).correct == Counts{8, 6, 6});
  CHECK(rig.evaluate(true, 0).correct == Counts{8, 6, 6});
  CHECK(rig.evaluate(true, 1).correct == Counts{6, 6, 6});
  CHECK(rig.evaluate(true, 2).correct == Counts{4, 4, 6});
  // task-aware: logits restricted to task i's classes, whatever was trained
  for (int t : {-1, 0, 2}) {
    INFO(t);
    CHECK(rig.evaluate(true, t).correct_task_aware == Counts{8, 8, 8});
  }
}

TEST_CASE("class-IL with eval_classes: all takes the argmax over every class", "[eval][evaluator]") {
  EvalRig rig("class-il");
  for (int t : {-1, 0, 2}) {
    INFO(t);
    EvalRow row = rig.evaluate(false, t);
    CHECK(row.correct == Counts{2, 2, 4});
    CHECK(row.correct_task_aware == Counts{8, 8, 8});  // the task-aware matrix is not affected
  }
}

TEST_CASE("task-IL masks the logits to the evaluated task's classes", "[eval][evaluator][task-il]") {
  EvalRig rig("task-il");
  for (bool seen_only : {true, false})
    for (int t : {-1, 0, 2}) {
      INFO(seen_only << " " << t);
      EvalRow row = rig.evaluate(seen_only, t);
      CHECK(row.correct == Counts{8, 8, 8});
      CHECK(row.correct_task_aware.empty());
    }
}
