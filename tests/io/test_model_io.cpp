// io/model_io: clrun export (a run's model with timm's names) and clrun forward, round trip.
#include <catch2/catch.hpp>

#include <fstream>

#include <spdlog/spdlog.h>

#include "clrun/io/model_io.hpp"
#include "clrun/io/safetensors.hpp"
#include "clrun/train/experiment.hpp"
#include "support.hpp"

using namespace clrun;

namespace {
const std::string kVit = "backbone={name: vit, patch: 4, width: 16, depth: 2, heads: 2";

/// A finished two-task SoTU run of a tiny ViT on the tiny data set; returns its directory.
std::string tiny_vit_run(const test::TempDir& dir) {
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override(kVit + "}"), parse_override("strategy={name: sotu, keep: 0.5, head: linear}"),
                                    parse_override("stream.num_tasks=2"), parse_override("train.epochs=1")});
  RunOptions options;
  options.out_dir = dir / "run";
  run_experiment(spec, options);
  return options.out_dir;
}
}  // namespace

TEST_CASE("clrun export writes the run's model with timm's names, it loads back as backbone.init", "[io][model_io]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("export");
  const std::string run = tiny_vit_run(dir);
  const std::string file = dir / "model.safetensors";
  const std::size_t n = export_run(run, std::nullopt, file);

  SafetensorsFile exported(file);
  CHECK(exported.names().size() == n);
  for (const char* name : {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
                           "blocks.1.mlp.fc2.bias", "norm.weight", "head.weight", "head.bias"}) {
    INFO(name);
    CHECK(exported.has(name));
  }
  for (const auto& name : exported.names()) CHECK(name.rfind("backbone.", 0) != 0);
  CHECK(exported.metadata().at("format") == "pt");
  CHECK(exported.metadata().at("clrun_checkpoint") == "task_001.pt");
  CHECK(nlohmann::json::parse(exported.metadata().at("clrun_strategy"))["name"] == "sotu");
  // The values are the checkpoint's (SoTU's merged model after the last task).
  for (const auto& [name, t] : public_names(checkpoint_model_tensors(run + "/checkpoints/task_001.pt"))) {
    INFO(name);
    CHECK(exported.get(name).equal(t));
  }
  // An earlier task's model differs.
  export_run(run, 0, dir / "task1.safetensors");
  CHECK_FALSE(SafetensorsFile(dir / "task1.safetensors").get("blocks.0.attn.qkv.weight").equal(exported.get("blocks.0.attn.qkv.weight")));

  // Round trip: forward from the run directory == forward from a config whose backbone.init is
  // the exported file (strict), bit for bit.
  torch::manual_seed(5);
  write_safetensors(dir / "in.safetensors", {{"x", torch::randn({3, 1, 12, 12})}});
  forward_file(run, {}, dir / "in.safetensors", "", dir / "out_run.safetensors", 0, std::nullopt);
  std::ofstream(dir / "model.yaml") << test::tiny_config(dir.path());
  const std::string init = kVit + ", init: {safetensors: " + file + ", strict: true}}";
  forward_file(dir / "model.yaml", {init}, dir / "in.safetensors", "x", dir / "out_config.safetensors", 0, std::nullopt);
  SafetensorsFile a(dir / "out_run.safetensors"), b(dir / "out_config.safetensors");
  CHECK(a.get("features").sizes() == std::vector<int64_t>{3, 16});
  CHECK(a.get("logits").sizes() == std::vector<int64_t>{3, 10});
  CHECK(a.get("features").equal(b.get("features")));
  CHECK(a.get("logits").equal(b.get("logits")));
  // An untrained model of the same config gives other outputs.
  forward_file(dir / "model.yaml", {init, "backbone.init=default"}, dir / "in.safetensors", "x", dir / "out_init.safetensors", 10,
               std::nullopt);
  CHECK_FALSE(SafetensorsFile(dir / "out_init.safetensors").get("logits").equal(a.get("logits")));
}

TEST_CASE("clrun export and forward refuse bad input with clear errors", "[io][model_io]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("export_bad");
  const std::string run = tiny_vit_run(dir);
  CHECK_THROWS_WITH(export_run(run, 7, dir / "x.safetensors"),
                    Catch::Contains("no checkpoint after task 8") && Catch::Contains("task_000.pt, task_001.pt"));
  CHECK_THROWS_WITH(export_run(dir.path(), std::nullopt, dir / "x.safetensors"), Catch::Contains("not a run directory"));
  write_safetensors(dir / "flat.safetensors", {{"x", torch::zeros({3, 144})}});
  CHECK_THROWS_WITH(forward_file(run, {}, dir / "flat.safetensors", "", dir / "o.safetensors", 0, std::nullopt),
                    Catch::Contains("[batch, channels, height, width]"));
  write_safetensors(dir / "two.safetensors", {{"a", torch::zeros({1, 1, 12, 12})}, {"b", torch::zeros({1})}});
  CHECK_THROWS_WITH(forward_file(run, {}, dir / "two.safetensors", "", dir / "o.safetensors", 0, std::nullopt),
                    Catch::Contains("--input"));
  // Another input size than the run's: the checkpoint's position embedding does not fit.
  write_safetensors(dir / "big.safetensors", {{"x", torch::zeros({1, 1, 16, 16})}});
  CHECK_THROWS_WITH(forward_file(run, {}, dir / "big.safetensors", "", dir / "o.safetensors", 0, std::nullopt),
                    Catch::Contains("pos_embed"));
}

TEST_CASE("clrun export names a resnet's head fc, as torchvision, it loads back", "[io][model_io]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("export_resnet");
  test::write_tiny_mnist(dir.path());
  const std::string resnet = "backbone={name: resnet, variant: resnet18_cifar, width: 4";
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override(resnet + "}"), parse_override("stream.num_tasks=1"),
                                   parse_override("train.epochs=1")});
  RunOptions options;
  options.out_dir = dir / "run";
  run_experiment(spec, options);
  const std::string file = dir / "resnet.safetensors";
  export_run(options.out_dir, std::nullopt, file);
  SafetensorsFile exported(file);
  for (const char* name : {"conv1.weight", "bn1.running_mean", "layer4.1.bn2.weight", "fc.weight", "fc.bias"}) {
    INFO(name);
    CHECK(exported.has(name));
  }
  CHECK_FALSE(exported.has("head.weight"));
  torch::manual_seed(2);
  write_safetensors(dir / "in.safetensors", {{"x", torch::randn({2, 1, 12, 12})}});
  std::ofstream(dir / "model.yaml") << test::tiny_config(dir.path());
  forward_file(options.out_dir, {}, dir / "in.safetensors", "", dir / "a.safetensors", 0, std::nullopt);
  forward_file(dir / "model.yaml", {resnet + ", init: {safetensors: " + file + "}}"}, dir / "in.safetensors", "",
               dir / "b.safetensors", 0, std::nullopt);
  CHECK(SafetensorsFile(dir / "a.safetensors").get("logits").equal(SafetensorsFile(dir / "b.safetensors").get("logits")));
}

TEST_CASE("clrun forward and generate run a t5 from its config.json and Hugging Face weights", "[io][model_io][t5]") {
  // The parity fixture through the CLI path: a config naming the user's config.json and weights.
  test::TempDir dir("forward_t5");
  const std::string fixtures = std::string(__FILE__).substr(0, std::string(__FILE__).find_last_of('/')) + "/../models/fixtures/";
  const std::string config = dir / "t5.yaml";
  std::ofstream(config) << "backbone: {name: t5, config: " << fixtures << "t5_gated_config.json, init: {safetensors: "
                        << fixtures << "t5_gated.safetensors}}\ndevice: cpu\n";
  const std::string io = fixtures + "t5_gated_io.safetensors";
  forward_file(config, {}, io, "", dir / "out.safetensors", 0, std::nullopt);
  SafetensorsFile want(io), got(dir / "out.safetensors");
  CHECK((got.get("logits") - want.get("logits")).abs().max().item<double>() < 1e-4);
  CHECK((got.get("encoder_states") - want.get("encoder_states")).abs().max().item<double>() < 1e-4);
  CHECK(std::abs(got.get("loss").item<double>() - want.get("loss").item<double>()) < 1e-5);
  generate_file(config, {}, io, dir / "gen.safetensors", 8, std::nullopt);
  CHECK(torch::equal(SafetensorsFile(dir / "gen.safetensors").get("generated", torch::kInt64), want.get("generated", torch::kInt64)));
}

TEST_CASE("clrun export merges LoRA adapters into the weights they adapt, with Hugging Face's names", "[io][model_io][lora]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("export_lora");
  ExperimentSpec spec = parse_spec(test::tiny_text_config(), "x.yaml",
                                   {parse_override("strategy={name: inclora, rank: 2, alpha: 4}"), parse_override("train.epochs=1")});
  RunOptions options;
  options.out_dir = dir / "run";
  run_experiment(spec, options);
  const std::string file = dir / "model.safetensors";
  export_run(options.out_dir, std::nullopt, file);
  SafetensorsFile exported(file);
  for (const auto& name : exported.names()) CHECK(name.find("lora") == std::string::npos);
  CHECK(exported.has("shared.weight"));
  // q.weight = W + 2 * (B_0 A_0 + B_1 A_1), from the checkpoint's tensors
  std::map<std::string, torch::Tensor> ckpt;
  for (auto& [n, t] : checkpoint_model_tensors(run_checkpoint(options.out_dir, std::nullopt))) ckpt[n] = t;
  const std::string q = "backbone.decoder.block.0.layer.1.EncDecAttention.q.";
  torch::Tensor expected = ckpt[q + "weight"].clone();
  for (int k = 0; k < 2; ++k) {
    const std::string a = q + "lora_" + std::to_string(k) + ".";
    CHECK(ckpt[a + "scale"].item<double>() == 2.0);
    expected += 2.0 * torch::matmul(ckpt[a + "B.weight"], ckpt[a + "A.weight"]);
  }
  CHECK_FALSE(torch::equal(expected, ckpt[q + "weight"]));  // the adapters learnt something
  CHECK(torch::allclose(exported.get("decoder.block.0.layer.1.EncDecAttention.q.weight"), expected, 1e-5, 1e-6));
}
