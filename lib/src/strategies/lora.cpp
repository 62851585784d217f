// The LoRA family on clrun's Linear (adapters: A kaiming-uniform, B zero, y += alpha/r B A dropout(x)):
//   `lora`     one adapter trained across every task (the MIGU paper's sequential LoRA baseline);
//   `inclora`  a new adapter per task, the earlier ones frozen and kept, all summed at test time;
//   `olora`    IncLoRA + O-LoRA's loss terms (Wang et al. 2023, cmnfriend/O-LoRA):
//              lambda1 * sum over adapted layers of sum |A_old A_new^T| (A_old: every earlier
//              adapter's A stacked) + lambda2 * sum over the new adapter's A and B of ||.||_F
//              (not squared), lambdas per task allowed.
// The base model (embeddings included) is frozen through the parameter groups. The adapters are
// added to the model at setup, all at once for the incremental variants (adapter t belongs to task
// t; until then its B is zero, so it adds exactly nothing), so checkpoints hold every adapter and
// a resumed run has the same modules. With `migu` around them (strategy: {name: migu, base: {name:
// lora, ...}, layers: ['*.lora_*']}), MIGU masks A's rank units and B's output units.
#include <torch/torch.h>

#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"
#include "clrun/models/linear.hpp"
#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {

struct LoraOptions {
  std::vector<std::string> targets = {"*.SelfAttention.q", "*.SelfAttention.v", "*.EncDecAttention.q",
                                      "*.EncDecAttention.v"};
  int64_t rank = 8;
  double alpha = 32;
  double dropout = 0.1;

  template <class V>
  void fields(V& v) {
    v("targets", targets, "name patterns (* wildcards) of the Linear layers that get adapters (default: q and v of "
      "every T5 self- and cross-attention)");
    v("rank", rank, "r: the adapter rank", at_least(1));
    v("alpha", alpha, "the adapter output is scaled by alpha / r", above(0));
    v("dropout", dropout, "dropout on the adapter's input (upstream 0.1; the paper says 0.05)", in_range(0, 1));
  }
};

struct OloraOptions {
  LoraOptions lora;
  std::vector<double> lambda1 = {0.5};
  std::vector<double> lambda2 = {0.0};

  template <class V>
  void fields(V& v) {
    lora.fields(v);
    v("lambda1", lambda1, "weight of the orthogonality term sum |A_old A_new^T|; one value, or one per task");
    v("lambda2", lambda2, "weight of the L2 term (Frobenius norms of the new adapter); one value, or one per task");
  }
};

class Lora : public Strategy {
 public:
  enum class Kind { single, incremental, orthogonal };
  Lora(Kind kind, LoraOptions o, std::vector<double> lambda1 = {}, std::vector<double> lambda2 = {})
      : kind_(kind), o_(std::move(o)), lambda1_(std::move(lambda1)), lambda2_(std::move(lambda2)) {}

  std::vector<ParamGroup> parameter_groups(TaskContext& ctx) override {
    ParamGroup g;
    for (auto& layer : layers_) {
      auto& a = layer->adapters.at(adapter_of(ctx.task));
      g.params.push_back(a->A->weight);
      g.params.push_back(a->B->weight);
    }
    return {g};
  }

  nlohmann::json describe() const override {
    int64_t params = 0;
    for (auto& layer : layers_)
      for (auto& a : layer->adapters) params += a->A->weight.numel() + a->B->weight.numel();
    return {{"adapted_layers", names_}, {"adapters_per_layer", layers_.empty() ? 0 : layers_[0]->adapters.size()},
            {"adapter_parameters", params}, {"rank", o_.rank}, {"scale", o_.alpha / static_cast<double>(o_.rank)}};
  }

 protected:
  void on_setup() override {
    if (!env().model) throw std::logic_error("lora: the strategy needs the run's model at setup");
    const int adapters = kind_ == Kind::single ? 1 : env().stream->num_tasks();
    for (auto& [name, layer] : nn::linear_layers(*env().model)) {
      bool selected = false;
      for (const auto& p : o_.targets) selected = selected || glob_match(p, name);
      if (!selected || name.find(".lora_") != std::string::npos) continue;
      for (int k = 0; k < adapters; ++k) layer->add_adapter(o_.rank, o_.alpha, o_.dropout);
      layers_.push_back(layer);
      names_.push_back(name);
    }
    if (layers_.empty())
      throw InputError("strategy.targets: no Linear layer of the model matches " + join(o_.targets, ", "));
    for (auto lambdas : {&lambda1_, &lambda2_})
      if (lambdas->size() > 1 && static_cast<int>(lambdas->size()) != env().stream->num_tasks())
        throw InputError("strategy.lambda1/lambda2: " + std::to_string(lambdas->size()) + " values for " +
                         std::to_string(env().stream->num_tasks()) + " tasks (give one, or one per task)");
  }

  void on_loss_terms(StepContext& ctx) override {
    if (kind_ != Kind::orthogonal) return;
    const int t = ctx.task;
    const double l1 = lambda(lambda1_, t), l2 = lambda(lambda2_, t);
    if (l1 > 0 && t > 0) {
      torch::Tensor orth = torch::zeros({}, ctx.loss.options());
      for (auto& layer : layers_) {
        std::vector<torch::Tensor> old;
        for (int k = 0; k < t; ++k) old.push_back(layer->adapters[k]->A->weight);
        orth = orth + torch::matmul(torch::cat(old), layer->adapters[t]->A->weight.t()).abs().sum();
      }
      ctx.add_loss("orthogonal", orth * l1);
    }
    if (l2 > 0) {
      torch::Tensor norms = torch::zeros({}, ctx.loss.options());
      for (auto& layer : layers_) norms = norms + layer->adapters[t]->A->weight.norm() + layer->adapters[t]->B->weight.norm();
      ctx.add_loss("l2", norms * l2);
    }
  }

 private:
  int adapter_of(int task) const { return kind_ == Kind::single ? 0 : task; }
  static double lambda(const std::vector<double>& values, int task) {
    if (values.empty()) return 0;
    return values.size() == 1 ? values[0] : values.at(task);
  }

  Kind kind_;
  LoraOptions o_;
  std::vector<double> lambda1_, lambda2_;
  std::vector<std::shared_ptr<nn::LinearImpl>> layers_;
  std::vector<std::string> names_;
};

}  // namespace

void register_lora(StrategyRegistry& registry) {
  registry.add<LoraOptions>("lora", "LoRA: one adapter on the target layers, trained across every task; the base frozen",
                            [](const LoraOptions& o, uint64_t) { return std::make_shared<Lora>(Lora::Kind::single, o); });
  registry.add<LoraOptions>("inclora", "IncLoRA: a new adapter per task, earlier ones frozen, all summed",
                            [](const LoraOptions& o, uint64_t) { return std::make_shared<Lora>(Lora::Kind::incremental, o); });
  registry.add<OloraOptions>("olora", "O-LoRA: IncLoRA + orthogonality (|A_old A_new^T|) and L2 terms",
                             [](const OloraOptions& o, uint64_t) {
                               return std::make_shared<Lora>(Lora::Kind::orthogonal, o.lora, o.lambda1, o.lambda2);
                             });
}

}  // namespace clrun
