// `lwf` (Li & Hoiem 2016, learning without forgetting), as Avalanche's LwF: before each task
// after the first, a frozen copy of the model (the teacher); the loss gains
// alpha * KL(softmax(teacher logits / T) || softmax(logits / T)) over the classes of earlier tasks
// (batch mean; `t_squared` multiplies by T^2 as in Hinton's distillation). With alpha = 0 the
// teacher is never run and the run equals finetune bit for bit.
#include <torch/torch.h>

#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {

struct LwfOptions {
  double alpha = 1;
  double temperature = 2;
  bool t_squared = false;

  template <class V>
  void fields(V& v) {
    v("alpha", alpha, "weight of the distillation term", at_least(0));
    v("temperature", temperature, "softmax temperature T of the distillation", above(0));
    v("t_squared", t_squared, "multiply the distillation term by T^2 (Hinton); Avalanche does not");
  }
};

class Lwf : public Strategy {
 public:
  explicit Lwf(const LwfOptions& o) : o_(o) {}

 protected:
  void on_before_task(TaskContext& ctx) override {
    if (ctx.task == 0) return;
    if (!teacher_) teacher_ = env().make_model();
    copy_state(ctx.model, *teacher_);
    freeze_teacher();
    old_classes_ = torch::tensor(ctx.stream.classes_of(0, ctx.task - 1), torch::kInt64).to(env().device);
  }

  void on_loss_terms(StepContext& ctx) override {
    if (!teacher_ || o_.alpha == 0 || old_classes_.numel() == 0) return;
    torch::Tensor target;
    {
      torch::NoGradGuard no_grad;
      target = torch::softmax(teacher_->forward(ctx.batch).index_select(1, old_classes_) / o_.temperature, 1);
    }
    torch::Tensor log_p = torch::log_softmax(ctx.output.index_select(1, old_classes_) / o_.temperature, 1);
    torch::Tensor kd = torch::kl_div(log_p, target, at::Reduction::Sum) / static_cast<double>(ctx.batch.size());
    if (o_.t_squared) kd = kd * (o_.temperature * o_.temperature);
    ctx.add_loss("lwf", o_.alpha * kd);
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("has_teacher", c10::IValue(static_cast<bool>(teacher_)));
    if (!teacher_) return;
    torch::serialize::OutputArchive model;
    teacher_->save(model);
    archive.write("teacher", model);
    archive.write("old_classes", old_classes_);
  }
  void load(torch::serialize::InputArchive& archive) override {
    c10::IValue has;
    archive.read("has_teacher", has);
    if (!has.toBool()) return;
    teacher_ = env().make_model();
    torch::serialize::InputArchive model;
    archive.read("teacher", model);
    teacher_->load(model);
    archive.read("old_classes", old_classes_);
    old_classes_ = old_classes_.to(env().device);
    freeze_teacher();
  }

 private:
  void freeze_teacher() {
    teacher_->eval();
    for (auto& p : teacher_->parameters()) p.requires_grad_(false);
  }

  LwfOptions o_;
  std::shared_ptr<Model> teacher_;
  torch::Tensor old_classes_;
};

}  // namespace

void register_lwf(StrategyRegistry& registry) {
  registry.add<LwfOptions>("lwf", "learning without forgetting: distil a frozen copy on the old classes",
                           [](const LwfOptions& o, uint64_t) { return std::make_shared<Lwf>(o); });
}

}  // namespace clrun
