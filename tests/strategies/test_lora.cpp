// strategies/lora: LoRA adapters on clrun's Linear (math, init, merge), the lora / inclora /
// olora strategies on a tiny T5 (what trains, what stays frozen, O-LoRA's terms, resume) and
// MIGU on adapters (A's rank units by A's output, B's units by the combined or own output).
#include <catch2/catch.hpp>

#include "clrun/io/model_io.hpp"
#include "clrun/models/linear.hpp"
#include "support.hpp"

using namespace clrun;

TEST_CASE("a LoRA adapter adds scale * B A dropout(x), B starts at zero, merging folds it in", "[strategies][lora]") {
  torch::manual_seed(3);
  nn::Linear layer(6, 5, true);
  torch::Tensor x = torch::randn({4, 6});
  torch::Tensor plain = layer->forward(x);
  auto a = layer->add_adapter(2, 8.0, 0.0);
  CHECK(a->scale == 4.0);
  CHECK(a->A->weight.sizes() == torch::IntArrayRef({2, 6}));
  CHECK(a->B->weight.sizes() == torch::IntArrayRef({5, 2}));
  CHECK(a->B->weight.eq(0).all().item<bool>());
  CHECK(torch::equal(layer->forward(x), plain));  // B = 0: the adapter adds exactly nothing
  {
    torch::NoGradGuard no_grad;
    a->B->weight.normal_();
  }
  torch::Tensor expected = plain + 4.0 * torch::matmul(torch::matmul(x, a->A->weight.t()), a->B->weight.t());
  CHECK(torch::allclose(layer->forward(x), expected, 1e-5, 1e-6));
  CHECK(torch::allclose(torch::linear(x, layer->merged_weight(), layer->bias), expected, 1e-5, 1e-6));
  CHECK(layer->named_parameters().contains("lora_0.A.weight"));
}

namespace {
/// A tiny-T5 text run of `strategy`, with the trained model's parameters before and after.
struct LoraRun {
  nlohmann::json metrics;
  std::map<std::string, torch::Tensor> first, last;  ///< checkpoints after task 0 and task 1
};

std::map<std::string, torch::Tensor> checkpoint_params(const std::string& run_dir, int task) {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, t] : checkpoint_model_tensors(run_checkpoint(run_dir, task))) out[name] = t;
  return out;
}

LoraRun run_lora(const std::string& strategy, const std::string& dir) {
  ExperimentSpec spec =
      parse_spec(test::tiny_text_config(), "x.yaml", {parse_override("strategy=" + strategy), parse_override("train.epochs=2")});
  RunOptions options;
  options.out_dir = dir;
  LoraRun r;
  r.metrics = run_experiment(spec, options).metrics;
  r.first = checkpoint_params(dir, 0);
  r.last = checkpoint_params(dir, 1);
  return r;
}

bool same(const LoraRun& r, const std::string& name) { return torch::equal(r.first.at(name), r.last.at(name)); }
}  // namespace

TEST_CASE("lora trains one adapter on q and v, inclora a new one per task, the base stays frozen", "[strategies][lora]") {
  test::TempDir dir("lora");
  const std::string q = "backbone.encoder.block.0.layer.0.SelfAttention.q.";
  SECTION("lora") {
    LoraRun r = run_lora("{name: lora, rank: 2, alpha: 4}", dir / "lora");
    CHECK(r.metrics["strategy_state"]["adapted_layers"].size() == 6);  // q, v of encoder self, decoder self and cross
    CHECK(r.metrics["strategy_state"]["adapters_per_layer"] == 1);
    CHECK_FALSE(same(r, q + "lora_0.B.weight"));  // trained in task 1 too
    for (const std::string frozen : {q + "weight", std::string("backbone.shared.weight"),
                                     std::string("backbone.decoder.block.0.layer.2.DenseReluDense.wo.weight")})
      CHECK(same(r, frozen));
    CHECK(r.first.count("backbone.encoder.block.0.layer.0.SelfAttention.k.lora_0.A.weight") == 0);
  }
  SECTION("inclora") {
    LoraRun r = run_lora("{name: inclora, rank: 2, alpha: 4}", dir / "inclora");
    CHECK(r.metrics["strategy_state"]["adapters_per_layer"] == 2);
    CHECK(same(r, q + "lora_0.A.weight"));  // task 0's adapter is frozen in task 1
    CHECK(same(r, q + "lora_0.B.weight"));
    CHECK(r.first.at(q + "lora_1.B.weight").eq(0).all().item<bool>());  // task 1's adapter: untouched in task 0
    CHECK_FALSE(same(r, q + "lora_1.B.weight"));
    CHECK(same(r, q + "weight"));
  }
  SECTION("olora adds the orthogonality and L2 terms from the second task") {
    LoraRun r = run_lora("{name: olora, rank: 2, alpha: 4, lambda1: [0.5], lambda2: [0.1]}", dir / "olora");
    const auto& t0 = r.metrics["per_task"][0]["loss_terms"];
    const auto& t1 = r.metrics["per_task"][1]["loss_terms"];
    CHECK_FALSE(t0.contains("orthogonal"));  // no earlier adapter at the first task
    CHECK(t0.value("l2", 0.0) > 0);
    CHECK(t1.value("orthogonal", 0.0) > 0);
    CHECK(same(r, q + "lora_0.A.weight"));
  }
}

TEST_CASE("MIGU on LoRA masks A's rank units by A's output and B's units by the combined output", "[strategies][lora][migu]") {
  // One step of task 1 (masked) on a Linear with one adapter, by hand: the gradient rows kept are
  // those of the largest magnitudes of A's output (A) and of the layer's output (B, combined).
  test::TempDir dir("lora_migu");
  for (const std::string source : {"combined", "own"}) {
    INFO(source);
    struct One : Model {
      nn::Linear layer{nullptr};
      One() {
        layer = register_module("layer", nn::Linear(6, 8, false));
        layer->add_adapter(4, 4.0, 0.0);
      }
      torch::Tensor forward(const Batch& b) override { return layer->forward(b.inputs); }
      torch::Tensor row_loss(const torch::Tensor& out, const Batch& b, const torch::Tensor&) override {
        return torch::nn::functional::cross_entropy(out, b.targets, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
      }
      torch::Tensor sample_targets(const torch::Tensor& out, const Batch&, const torch::Tensor&, at::Generator&) override {
        return out.argmax(1);
      }
    };
    torch::manual_seed(4);
    auto model = std::make_shared<One>();
    auto& adapter = model->layer->adapters[0];
    {
      torch::NoGradGuard no_grad;
      adapter->B->weight.normal_();
    }
    ExperimentSpec spec = parse_spec(test::tiny_text_config(), "x.yaml",
                                     {parse_override("strategy={name: migu, threshold: 0.5, layers: ['*.lora_*'], "
                                                     "lora_b_magnitude: " + source + "}")});
    auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
    auto migu = spec.strategy.build(0);
    migu->setup(StrategyEnv{0, stream.get(), torch::kCPU, nullptr, model.get()});
    LossFn loss;
    TaskContext task{1, *model, *stream, loss, nullptr, nullptr};
    migu->before_task(task);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
    Batch b;
    b.inputs = torch::randn({5, 6});
    b.targets = torch::tensor({1, 3, 0, 2, 7});
    StepContext step{1, 0, 0, *model, opt, *stream, loss, b, 5, b, 1.0, {}, {}, {}};
    step.output = model->forward(step.batch);
    step.loss = step.task_loss(step.output, step.batch);
    step.loss.backward();
    torch::Tensor grad_a = adapter->A->weight.grad().clone(), grad_b = adapter->B->weight.grad().clone();
    migu->after_backward(step);
    torch::NoGradGuard no_grad;
    torch::Tensor a_out = torch::matmul(b.inputs, adapter->A->weight.t());
    torch::Tensor b_out = source == "combined" ? step.output : torch::matmul(a_out, adapter->B->weight.t());
    torch::Tensor keep_a = migu_row_mask(a_out.abs().sum(0), 0.5), keep_b = migu_row_mask(b_out.abs().sum(0), 0.5);
    CHECK(torch::equal(adapter->A->weight.grad(), grad_a * keep_a.unsqueeze(1)));
    CHECK(torch::equal(adapter->B->weight.grad(), grad_b * keep_b.unsqueeze(1)));
    CHECK_FALSE(torch::equal(keep_b, torch::ones_like(keep_b)));
  }
}

TEST_CASE("LoRA-family runs interrupted mid-task resume with identical numbers", "[strategies][lora][resume]") {
  for (const std::string strategy : {"{name: olora, rank: 2, alpha: 4, lambda2: [0.1]}",
                                     "{name: migu, threshold: 0.5, layers: ['*.lora_*'], base: {name: inclora, rank: 2}}"}) {
    INFO(strategy);
    test::TempDir dir("lora_resume");
    ExperimentSpec spec = parse_spec(test::tiny_text_config(), "x.yaml",
                                     {parse_override("strategy=" + strategy), parse_override("train.epochs=3")});
    auto [expected, resumed] = test::run_interrupted_and_resumed(spec, dir.path(), 1, 2);
    CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
    CHECK(resumed["per_task"][1]["mean_loss"] == expected["per_task"][1]["mean_loss"]);
    CHECK(resumed["per_task"][1]["loss_terms"] == expected["per_task"][1]["loss_terms"]);
  }
}
