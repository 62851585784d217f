// Evaluator: batched no-grad scoring, one host sync per task.
#include "clrun/eval/evaluator.hpp"

#include <torch/torch.h>

#include "clrun/eval/metrics.hpp"

namespace clrun {

Evaluator::Evaluator(const Stream& stream, Strategy& strategy, int64_t batch_size, bool seen_only, bool future_tasks)
    : stream_(stream), strategy_(strategy), batch_size_(batch_size), seen_only_(seen_only), future_tasks_(future_tasks) {}

torch::Tensor Evaluator::logit_mask(const std::vector<int64_t>& classes, int64_t num_classes, torch::Device device) {
  // Finite, so that a masked target gives a large loss rather than NaN.
  torch::Tensor mask = torch::full({num_classes}, -1e30, torch::kFloat32);
  mask.index_fill_(0, torch::tensor(classes, torch::kInt64), 0.0);
  return mask.to(device);
}

EvalRow Evaluator::evaluate(Model& model, int trained_task) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const bool class_il = stream_.scenario == Scenario::class_il;
  const bool task_il = stream_.scenario == Scenario::task_il;
  const torch::Device device = stream_.device();
  EvalRow row;
  for (const Task& task : stream_.tasks) {
    if (!future_tasks_ && task.index > trained_task) {
      row.correct.push_back(AccuracyMatrix::kNotEvaluated);
      if (class_il) row.correct_task_aware.push_back(AccuracyMatrix::kNotEvaluated);
      continue;
    }
    torch::Tensor task_mask = logit_mask(task.classes, stream_.num_classes, device);
    torch::Tensor main_mask;  // undefined: argmax over every class
    if (task_il) main_mask = task_mask;
    else if (class_il && seen_only_)
      main_mask = logit_mask(stream_.classes_of(0, std::max(trained_task, task.index)), stream_.num_classes, device);
    torch::Tensor correct = torch::zeros({}, torch::TensorOptions(torch::kInt64).device(device));
    torch::Tensor correct_aware = torch::zeros_like(correct);
    const int64_t n = task.test_rows.size(0);
    for (int64_t start = 0; start < n; start += batch_size_) {
      Batch batch;
      batch.index = task.test_rows.slice(0, start, std::min(n, start + batch_size_));
      batch.inputs = stream_.inputs(stream_.test, batch.index, task);
      batch.targets = stream_.test.labels.index_select(0, batch.index);
      batch.task_ids = torch::full_like(batch.index, task.index);
      const EvalContext ctx{trained_task, task.index, model, stream_};
      torch::Tensor logits = strategy_.eval_logits(ctx, strategy_.eval_forward(ctx, batch));
      const torch::Tensor& y = batch.targets;
      torch::Tensor scored = main_mask.defined() ? logits + main_mask : logits;
      correct += scored.argmax(1).eq(y).sum();
      if (class_il) correct_aware += (logits + task_mask).argmax(1).eq(y).sum();
    }
    row.correct.push_back(correct.item<int64_t>());
    if (class_il) row.correct_task_aware.push_back(correct_aware.item<int64_t>());
  }
  model.train(was_training);
  return row;
}

}  // namespace clrun
