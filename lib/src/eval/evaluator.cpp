// Evaluator: batched no-grad scoring, one host sync per evaluation.
#include "clrun/eval/evaluator.hpp"

#include <chrono>

#include <torch/torch.h>

#include "clrun/core/device.hpp"
#include "clrun/data/tokenizer.hpp"
#include "clrun/eval/metrics.hpp"

namespace clrun {

Evaluator::Evaluator(const Stream& stream, Strategy& strategy, int64_t batch_size, bool seen_only, bool future_tasks,
                     int64_t max_new_tokens, bool bf16, const World* world)
    : stream_(stream),
      strategy_(strategy),
      batch_size_(batch_size),
      seen_only_(seen_only),
      future_tasks_(future_tasks),
      max_new_tokens_(max_new_tokens),
      bf16_(bf16),
      world_(world) {}

EvalRow Evaluator::skipped() const {
  EvalRow row;
  row.correct.assign(stream_.num_tasks(), AccuracyMatrix::kNotEvaluated);
  if (stream_.scenario == Scenario::class_il) row.correct_task_aware = row.correct;
  return row;
}

int64_t Evaluator::generate_and_score(Model& model, const Task& task, std::vector<EvalRow::Prediction>& predictions) const {
  const Tokenizer& tokenizer = *stream_.tokenizer;
  const torch::Tensor rows = task.test_rows.cpu();
  const torch::Tensor labels = stream_.test.labels.index_select(0, rows);
  int64_t correct = 0;
  for (int64_t start = 0; start < rows.size(0); start += batch_size_) {
    const int64_t end = std::min(rows.size(0), start + batch_size_);
    Batch batch = stream_.make_batch(stream_.test, rows.slice(0, start, end), {}, {task.index});
    const auto t0 = std::chrono::steady_clock::now();
    const torch::Tensor ids = model.generate(batch, max_new_tokens_).cpu().contiguous();
    generation_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    generated_tokens_ += ids.ne(0).sum().item<int64_t>();
    for (int64_t i = 0; i < ids.size(0); ++i) {
      const int64_t* p = ids[i].data_ptr<int64_t>();
      std::string answer = tokenizer.decode(std::vector<int64_t>(p, p + ids.size(1)));
      const int64_t label = labels[start + i].item<int64_t>();
      const bool match = label >= 0 && normalize_answer(answer) == normalize_answer(stream_.class_names.at(label));
      correct += match;
      predictions.push_back({std::move(answer), match});
    }
  }
  return correct;
}

torch::Tensor Evaluator::logit_mask(const std::vector<int64_t>& classes, int64_t num_classes, torch::Device device) {
  // Finite, so that a masked target gives a large loss rather than NaN.
  torch::Tensor mask = torch::full({num_classes}, -1e30, torch::kFloat32);
  mask.index_fill_(0, torch::tensor(classes, torch::kInt64), 0.0);
  return mask.to(device);
}

EvalRow Evaluator::evaluate(Model& model, int trained_task) {
  torch::NoGradGuard no_grad;
  AutocastGuard autocast(bf16_, stream_.device());
  const bool was_training = model.is_training();
  model.eval();
  const bool class_il = stream_.scenario == Scenario::class_il;
  const bool task_il = stream_.scenario == Scenario::task_il;
  const torch::Device device = stream_.device();
  EvalRow row;
  // Image streams: the correct counts of the scored tasks (their positions in `scored`), read in
  // one host sync (data parallel: one collective) at the end.
  std::vector<torch::Tensor> counts;
  std::vector<std::size_t> scored;
  for (const Task& task : stream_.tasks) {
    if (!future_tasks_ && task.index > trained_task) {
      row.correct.push_back(AccuracyMatrix::kNotEvaluated);
      if (class_il) row.correct_task_aware.push_back(AccuracyMatrix::kNotEvaluated);
      if (stream_.is_text()) row.predictions.emplace_back();
      continue;
    }
    if (stream_.is_text()) {
      row.predictions.emplace_back();
      row.correct.push_back(generate_and_score(model, task, row.predictions.back()));
      continue;
    }
    torch::Tensor task_mask = logit_mask(task.classes, stream_.num_classes, device);
    torch::Tensor main_mask;  // undefined: argmax over every class
    if (task_il) main_mask = task_mask;
    else if (class_il && seen_only_)
      main_mask = logit_mask(stream_.classes_of(0, std::max(trained_task, task.index)), stream_.num_classes, device);
    torch::Tensor correct = torch::zeros({}, torch::TensorOptions(torch::kInt64).device(device));
    torch::Tensor correct_aware = torch::zeros_like(correct);
    const auto [first, last] = world_ ? world_->shard(task.test_rows.size(0)) : std::pair<int64_t, int64_t>{0, task.test_rows.size(0)};
    for (int64_t start = first; start < last; start += batch_size_) {
      Batch batch = stream_.make_batch(stream_.test, task.test_rows.slice(0, start, std::min(last, start + batch_size_)), {},
                                       {task.index});
      const EvalContext ctx{trained_task, task.index, model, stream_};
      torch::Tensor logits = strategy_.eval_logits(ctx, strategy_.eval_forward(ctx, batch));
      const torch::Tensor& y = batch.targets;
      const torch::Tensor ranked = main_mask.defined() ? logits + main_mask : logits;
      correct += ranked.argmax(1).eq(y).sum();
      if (class_il) correct_aware += (logits + task_mask).argmax(1).eq(y).sum();
    }
    scored.push_back(row.correct.size());
    counts.push_back(class_il ? torch::stack({correct, correct_aware}) : correct.unsqueeze(0));
    row.correct.push_back(0);
    if (class_il) row.correct_task_aware.push_back(0);
  }
  if (!counts.empty()) {
    torch::Tensor all = torch::stack(counts);
    if (world_) world_->all_reduce_sum({all});
    all = all.cpu();
    for (std::size_t k = 0; k < scored.size(); ++k) {
      row.correct[scored[k]] = all[static_cast<int64_t>(k)][0].item<int64_t>();
      if (class_il) row.correct_task_aware[scored[k]] = all[static_cast<int64_t>(k)][1].item<int64_t>();
    }
  }
  model.train(was_training);
  return row;
}

}  // namespace clrun
