// models/vit: timm's ViT layout, sizes, pooling, position-embedding resampling, taps, training.
#include <catch2/catch.hpp>

#include <spdlog/spdlog.h>

#include "clrun/config/spec.hpp"
#include "clrun/io/safetensors.hpp"
#include "clrun/models/model.hpp"
#include "clrun/models/vit.hpp"
#include "support.hpp"

using namespace clrun;

namespace {
std::shared_ptr<Backbone> vit(const std::string& options, std::vector<int64_t> shape) {
  return parse_spec("backbone: {name: vit, " + options + "}", "x.yaml").backbone.build(shape);
}
}  // namespace

TEST_CASE("vit has timm's parameter names and counts", "[models][vit]") {
  // timm's vit_tiny_patch16_224 has 5,717,416 parameters, of which the 1000-class head holds 193,000.
  auto tiny = vit("size: tiny", {3, 224, 224});
  CHECK(count_parameters(*tiny) == 5717416 - 193000);
  CHECK(tiny->feature_dim() == 192);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : tiny->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  CHECK(shapes.at("patch_embed.proj.weight") == std::vector<int64_t>{192, 3, 16, 16});
  CHECK(shapes.at("cls_token") == std::vector<int64_t>{1, 1, 192});
  CHECK(shapes.at("pos_embed") == std::vector<int64_t>{1, 197, 192});
  CHECK(shapes.at("blocks.11.attn.qkv.weight") == std::vector<int64_t>{576, 192});
  CHECK(shapes.at("blocks.11.attn.qkv.bias") == std::vector<int64_t>{576});
  CHECK(shapes.at("blocks.0.attn.proj.weight") == std::vector<int64_t>{192, 192});
  CHECK(shapes.at("blocks.0.mlp.fc1.weight") == std::vector<int64_t>{768, 192});
  CHECK(shapes.at("blocks.0.mlp.fc2.bias") == std::vector<int64_t>{192});
  CHECK(shapes.at("blocks.3.norm1.weight") == std::vector<int64_t>{192});
  CHECK(shapes.at("blocks.3.norm2.bias") == std::vector<int64_t>{192});
  CHECK(shapes.at("norm.weight") == std::vector<int64_t>{192});
  CHECK(shapes.count("fc_norm.weight") == 0);
  CHECK(shapes.size() == 4 + 12 * 12 + 2);
  auto avg = vit("width: 32, depth: 1, heads: 2, patch: 4, pool: avg", {1, 12, 12});
  auto names = avg->named_parameters().keys();
  CHECK(std::count(names.begin(), names.end(), "fc_norm.weight") == 1);
  CHECK(std::count(names.begin(), names.end(), "norm.weight") == 0);
}

TEST_CASE("vit init follows timm and options are checked", "[models][vit]") {
  torch::manual_seed(0);
  auto b = vit("width: 64, depth: 2, heads: 4, patch: 4", {1, 16, 16});
  auto params = b->named_parameters();
  CHECK(params["cls_token"].abs().max().item<double>() < 1e-5);
  CHECK(params["pos_embed"].std().item<double>() == Approx(0.02).epsilon(0.15));
  CHECK(params["blocks.0.attn.qkv.weight"].std().item<double>() == Approx(0.02).epsilon(0.1));
  CHECK(params["blocks.0.attn.qkv.weight"].abs().max().item<double>() <= 2 * 0.02 * 5);
  CHECK(params["blocks.1.mlp.fc2.bias"].abs().max().item<double>() == 0.0);
  CHECK(params["norm.weight"].eq(1).all().item<bool>());
  CHECK_THROWS_WITH(vit("patch: 5", {1, 28, 28}), Catch::StartsWith("backbone.patch: 28x28 inputs are not a whole number"));
  CHECK_THROWS_WITH(parse_spec("backbone: {name: vit, width: 30, heads: 4}", "x.yaml"),
                    Catch::Contains("backbone.heads: 4 heads do not divide width 30"));
}

TEST_CASE("vit forward: token pooling reads the class token, features are deterministic in eval", "[models][vit]") {
  torch::manual_seed(1);
  auto b = vit("width: 32, depth: 2, heads: 2, patch: 4, dropout: 0.5, drop_path: 0.5", {1, 12, 12});
  torch::Tensor x = torch::randn({3, 1, 12, 12});
  b->eval();
  torch::Tensor f = b->forward(x);
  CHECK(f.sizes() == std::vector<int64_t>{3, 32});
  CHECK(torch::equal(f, b->forward(x)));
  // each row depends only on its own image
  CHECK(torch::allclose(b->forward(x.narrow(0, 1, 1)), f.narrow(0, 1, 1), 1e-5, 1e-6));
  b->train();
  CHECK_FALSE(torch::allclose(b->forward(x), f));  // dropout and stochastic depth act in training
  // features are the final norm of the class token: they have zero mean and unit variance per row
  b->eval();
  CHECK(f.mean(1).abs().max().item<double>() < 1e-5);
}

TEST_CASE("position embeddings are resampled bicubically like timm's", "[models][vit]") {
  torch::Tensor pos = torch::randn({1, 1 + 4 * 4, 8});
  CHECK(torch::equal(resample_pos_embed(pos, {4, 4}), pos));
  torch::Tensor bigger = resample_pos_embed(pos, {7, 6});
  CHECK(bigger.sizes() == std::vector<int64_t>{1, 1 + 42, 8});
  CHECK(torch::equal(bigger.narrow(1, 0, 1), pos.narrow(1, 0, 1)));  // class token untouched
  // A constant field stays constant; bicubic (not bilinear) overshoots near a step.
  torch::Tensor constant = torch::cat({torch::zeros({1, 1, 2}), torch::full({1, 9, 2}, 3.0)}, 1);
  CHECK(torch::allclose(resample_pos_embed(constant, {5, 5}).narrow(1, 1, 25), torch::full({1, 25, 2}, 3.0)));
  torch::Tensor step = torch::zeros({1, 1 + 16, 1});
  step.narrow(1, 1, 16).view({4, 4}).narrow(1, 2, 2).fill_(1.0);
  torch::Tensor up = resample_pos_embed(step, {8, 8}).narrow(1, 1, 64).view({8, 8});
  CHECK(up.max().item<double>() > 1.0);
  CHECK_THROWS_WITH(resample_pos_embed(torch::zeros({1, 1 + 10, 4}), {3, 3}), Catch::Contains("not a square grid"));
}

TEST_CASE("vit's layers are tapped and it trains in a run", "[models][vit][run]") {
  spdlog::set_level(spdlog::level::warn);
  auto b = vit("width: 32, depth: 2, heads: 2, patch: 4", {1, 12, 12});
  CHECK(nn::tapped_layers(*b).size() == 1 + 2 * 4);  // patch projection + qkv, proj, fc1, fc2 per block
  test::TempDir dir("vit_run");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override("backbone={name: vit, width: 32, depth: 2, heads: 2, patch: 4}"),
                                    parse_override("train.epochs=4"), parse_override("stream.num_tasks=1"),
                                    parse_override("train.optimizer={name: adamw, lr: 0.003}")});
  RunOptions options;
  options.out_dir = dir / "run";
  nlohmann::json m = run_experiment(spec, options).metrics;
  CHECK(m["accuracy"]["matrix"][0][0].get<double>() >= 90.0);
}

TEST_CASE("backbone.init loads timm-named safetensors weights, resampling pos_embed", "[models][vit][safetensors]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("vit_init");
  torch::manual_seed(3);
  // "Pre-trained" weights for 16x16 inputs, saved under timm's names with a 1000-class head.
  auto source = vit("width: 32, depth: 2, heads: 2, patch: 4", {1, 16, 16});
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : source->named_parameters()) tensors.emplace_back(p.key(), p.value().detach().clone());
  tensors.emplace_back("head.weight", torch::randn({1000, 32}));
  tensors.emplace_back("head.bias", torch::randn({1000}));
  write_safetensors(dir / "vit.safetensors", tensors);

  // A run on 12x12 inputs (3x3 patches instead of 4x4) with 10 classes.
  ExperimentSpec spec = parse_spec(
      "backbone: {name: vit, width: 32, depth: 2, heads: 2, patch: 4, init: {safetensors: " + (dir / "vit.safetensors") + "}}",
      "x.yaml");
  CHECK(spec.resolved()["backbone"]["init"] == nlohmann::json{{"safetensors", dir / "vit.safetensors"}, {"strict", true}});
  auto model = std::make_shared<Classifier>(spec.backbone.build(std::vector<int64_t>{1, 12, 12}), 10);
  torch::Tensor head_before = model->head->weight.clone();
  initialize(*model, spec.backbone_common.init);
  auto loaded = model->named_parameters();
  for (const auto& p : source->named_parameters()) {
    INFO(p.key());
    if (p.key() == "pos_embed") continue;
    CHECK(torch::equal(loaded["backbone." + p.key()], p.value()));
  }
  CHECK(torch::equal(loaded["backbone.pos_embed"], resample_pos_embed(source->named_parameters()["pos_embed"], {3, 3})));
  CHECK(torch::equal(model->head->weight, head_before));  // a 1000-class head does not fit 10 classes

  // strict: a tensor the backbone lacks is an error naming it; strict: false loads the rest
  tensors.emplace_back("pre_logits.fc.weight", torch::randn({32, 32}));
  write_safetensors(dir / "extra.safetensors", tensors);
  auto with = [&](const std::string& init) {
    ExperimentSpec s = parse_spec("backbone: {name: vit, width: 32, depth: 2, heads: 2, patch: 4, init: " + init + "}", "x.yaml");
    auto m = std::make_shared<Classifier>(s.backbone.build(std::vector<int64_t>{1, 16, 16}), 10);
    initialize(*m, s.backbone_common.init);
    return m;
  };
  CHECK_THROWS_WITH(with("{safetensors: " + (dir / "extra.safetensors") + "}"),
                    Catch::Contains("does not fit the backbone (unexpected: pre_logits.fc.weight)"));
  CHECK(torch::equal(with("{safetensors: " + (dir / "extra.safetensors") + ", strict: false}")
                         ->named_parameters()["backbone.blocks.1.mlp.fc2.weight"],
                     source->named_parameters()["blocks.1.mlp.fc2.weight"]));
  CHECK_THROWS_WITH(parse_spec("backbone: {name: vit, init: {safetensors: /nonexistent/w.safetensors}}", "x.yaml"),
                    Catch::StartsWith("x.yaml:1:43: backbone.init.safetensors: /nonexistent/w.safetensors: no such file"));
  CHECK_THROWS_WITH(parse_spec("backbone: {name: mlp, init: he}", "x.yaml"),
                    Catch::Contains("expected default, xavier_uniform or {safetensors: PATH, strict: true}, got 'he'"));
}

TEST_CASE("a vit run resumed mid-task gives the uninterrupted run's numbers", "[models][vit][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("vit_resume");
  test::write_tiny_mnist(dir.path());
  // dropout and stochastic depth draw from the generator the checkpoint restores
  ExperimentSpec spec = parse_spec(
      test::tiny_config(dir.path()), "tiny.yaml",
      {parse_override("backbone={name: vit, width: 16, depth: 2, heads: 2, patch: 4, dropout: 0.1, drop_path: 0.1}"),
       parse_override("train.epochs=1")});
  auto [expected, resumed] = test::run_interrupted_and_resumed(spec, dir.path(), /*task=*/1, /*step=*/2);
  CHECK(resumed["accuracy"] == expected["accuracy"]);
  CHECK(resumed["metrics"] == expected["metrics"]);
  for (int t = 0; t < 3; ++t) CHECK(resumed["per_task"][t]["mean_loss"] == expected["per_task"][t]["mean_loss"]);
}
