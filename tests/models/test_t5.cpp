// models/t5: parity with an independent PyTorch T5 (scripts/make_t5_fixtures.py, written from the
// math of transformers' T5ForConditionalGeneration) on two random configs: v1.0 (relu, tied
// embeddings, the file holding shared + encoder.embed_tokens) and gated-gelu (untied lm_head).
#include <catch2/catch.hpp>

#include "clrun/io/safetensors.hpp"
#include "clrun/models/linear.hpp"
#include "clrun/models/t5.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

std::string fixture(const std::string& name) {
  std::string here = __FILE__;
  return here.substr(0, here.find_last_of('/')) + "/fixtures/" + name;
}

std::shared_ptr<Seq2SeqModel> load_case(const std::string& name) {
  ExperimentSpec spec = parse_spec("backbone: {name: t5, config: " + fixture("t5_" + name + "_config.json") +
                                       ", init: {safetensors: " + fixture("t5_" + name + ".safetensors") + ", strict: true}}",
                                   "x.yaml");
  auto lm = std::dynamic_pointer_cast<LanguageModel>(spec.backbone.build(std::vector<int64_t>{}));
  REQUIRE(lm);
  lm->initialize(spec.backbone_common.init);
  auto model = std::make_shared<Seq2SeqModel>(lm);
  model->eval();
  return model;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST_CASE("t5 matches the reference: encoder states, logits, loss, greedy generation", "[models][t5][parity]") {
  for (const std::string name : {"v10", "gated"}) {
    SECTION(name) {
      auto model = load_case(name);
      SafetensorsFile io(fixture("t5_" + name + "_io.safetensors"));
      Batch batch;
      batch.inputs = io.get("input_ids", torch::kInt64);
      batch.extra["attention_mask"] = io.get("attention_mask", torch::kInt64);
      batch.targets = io.get("labels", torch::kInt64);
      torch::NoGradGuard no_grad;
      torch::Tensor logits = model->forward(batch);
      REQUIRE(logits.sizes() == io.get("logits").sizes());
      CHECK(max_diff(logits, io.get("logits")) < 1e-4);
      CHECK(std::abs(model->task_loss(logits, batch, {}).item<double>() - io.get("loss").item<double>()) < 1e-5);
      // The encoder states, through the LanguageModel's pooled features: compare every position.
      torch::Tensor states = io.get("encoder_states");
      torch::Tensor mask = batch.extra["attention_mask"].to(torch::kFloat32).unsqueeze(-1);
      torch::Tensor pooled = (states * mask).sum(1) / mask.sum(1);
      CHECK(max_diff(model->features(batch), pooled) < 1e-4);
      // Greedy generation with the key/value cache equals the reference's full re-decoding.
      torch::Tensor generated = model->generate(batch, 8);
      CHECK(torch::equal(generated, io.get("generated", torch::kInt64)));
    }
  }
}

TEST_CASE("t5 position buckets match the reference (exact, logarithmic and capped ranges)", "[models][t5]") {
  struct Case {
    std::string name;
    int64_t buckets, distance;
  };
  for (const Case& c : {Case{"v10", 8, 20}, Case{"gated", 8, 16}}) {
    SafetensorsFile io(fixture("t5_" + c.name + "_io.safetensors"));
    for (const char* suffix : {"", "_wide"}) {
      const int64_t n = std::string(suffix).empty() ? 12 : 40;
      torch::Tensor q = torch::arange(n, torch::kInt64).unsqueeze(1), k = torch::arange(n, torch::kInt64).unsqueeze(0);
      INFO(c.name << suffix);
      CHECK(torch::equal(t5_position_buckets(k - q, true, c.buckets, c.distance),
                         io.get(std::string("position_bucket_encoder") + suffix, torch::kInt64)));
      CHECK(torch::equal(t5_position_buckets(k - q, false, c.buckets, c.distance),
                         io.get(std::string("position_bucket_decoder") + suffix, torch::kInt64)));
    }
  }
}

TEST_CASE("t5 names, tied embeddings and initialisation", "[models][t5]") {
  T5Config c;
  c.d_model = 8, c.d_ff = 12, c.d_kv = 4, c.num_heads = 2, c.num_layers = 2, c.num_decoder_layers = 1, c.vocab_size = 20;
  auto tied = make_t5(c);
  auto params = tied->named_parameters();
  for (const char* name : {"shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
                           "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                           "encoder.block.1.layer.1.DenseReluDense.wi.weight", "encoder.final_layer_norm.weight",
                           "decoder.block.0.layer.1.EncDecAttention.o.weight", "decoder.block.0.layer.2.layer_norm.weight"})
    CHECK(params.contains(name));
  CHECK_FALSE(params.contains("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"));
  CHECK_FALSE(params.contains("lm_head.weight"));  // tied: one parameter, shared.weight
  // Every Linear is clrun's (MIGU, LoRA), the tied lm_head included, on the shared tensor.
  bool head = false;
  for (auto& [name, layer] : nn::linear_layers(*tied))
    if (name == "lm_head") head = layer->weight.is_same(params["shared.weight"]);
  CHECK(head);
  // Mesh-TF init: shared N(0, 1), k N(0, d_model^-0.5), norms 1.
  CHECK(params["shared.weight"].std().item<double>() > 0.7);
  CHECK(params["encoder.final_layer_norm.weight"].eq(1).all().item<bool>());
  c.tie_word_embeddings = false;
  c.feed_forward_proj = "gated-gelu";
  auto untied = make_t5(c);
  CHECK(untied->named_parameters().contains("lm_head.weight"));
  CHECK(untied->named_parameters().contains("decoder.block.0.layer.2.DenseReluDense.wi_1.weight"));
}

TEST_CASE("t5 config: config.json with inline overrides, bad files are clear errors", "[models][t5]") {
  ExperimentSpec spec = parse_spec("backbone: {name: t5, config: " + fixture("t5_gated_config.json") + ", num_layers: 1}",
                                   "x.yaml");
  auto lm = std::dynamic_pointer_cast<LanguageModel>(spec.backbone.build(std::vector<int64_t>{}));
  nlohmann::json d = lm->describe();
  CHECK(d["num_layers"] == 1);
  CHECK(d["num_decoder_layers"] == 2);
  CHECK(d["feed_forward_proj"] == "gated-gelu");
  CHECK(d["tie_word_embeddings"] == false);
  CHECK_THROWS_WITH(parse_spec("backbone: {name: t5, config: /nonexistent/config.json}", "x.yaml").backbone.build(std::vector<int64_t>{}),
                    Catch::Contains("backbone.config") && Catch::Contains("/nonexistent/config.json"));
  // A weights file of another size is refused with the names and shapes.
  ExperimentSpec wrong = parse_spec("backbone: {name: t5, config: " + fixture("t5_v10_config.json") +
                                        ", d_model: 8, init: {safetensors: " + fixture("t5_v10.safetensors") + "}}",
                                    "x.yaml");
  auto small = std::dynamic_pointer_cast<LanguageModel>(wrong.backbone.build(std::vector<int64_t>{}));
  CHECK_THROWS_WITH(small->initialize(wrong.backbone_common.init), Catch::Contains("other shapes"));
}

TEST_CASE("t5 loads the first vocab_size rows of a larger vocabulary (upstream's resize to 32100)", "[models][t5]") {
  ExperimentSpec spec = parse_spec("backbone: {name: t5, config: " + fixture("t5_gated_config.json") + ", vocab_size: 30, init: "
                                       "{safetensors: " + fixture("t5_gated.safetensors") + "}}",
                                   "x.yaml");
  auto lm = std::dynamic_pointer_cast<LanguageModel>(spec.backbone.build(std::vector<int64_t>{}));
  lm->initialize(spec.backbone_common.init);
  SafetensorsFile w(fixture("t5_gated.safetensors"));
  auto params = lm->named_parameters();
  CHECK(torch::equal(params["shared.weight"], w.get("shared.weight").narrow(0, 0, 30)));
  CHECK(torch::equal(params["lm_head.weight"], w.get("lm_head.weight").narrow(0, 0, 30)));
}
