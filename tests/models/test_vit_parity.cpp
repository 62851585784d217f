// models/vit parity: clrun's vit against timm's VisionTransformer (v0.9.16), on fixtures written by
// scripts/make_vit_fixtures.py: timm-named weights (redrawn at O(1) scale) in vit_<case>.safetensors,
// inputs and timm's outputs (__input, __features = pre-logits, __logits) in vit_<case>_io.safetensors.
#include <catch2/catch.hpp>

#include <string>

#include "clrun/config/spec.hpp"
#include "clrun/io/safetensors.hpp"
#include "clrun/models/model.hpp"

using namespace clrun;

namespace {

std::string fixture_dir() {
  std::string here = __FILE__;
  return here.substr(0, here.find_last_of('/')) + "/fixtures/";
}

struct ParityCase {
  std::string name;     ///< fixture stem
  std::string options;  ///< vit options matching the timm model
  std::vector<int64_t> shape;
  int64_t classes;
};

}  // namespace

TEST_CASE("vit matches timm's VisionTransformer numerically", "[models][vit][parity]") {
  const std::vector<ParityCase> cases = {
      {"vit_token", "patch: 8, width: 32, depth: 2, heads: 2, qkv_bias: true, pool: token", {3, 32, 32}, 5},
      {"vit_avg", "patch: 8, width: 32, depth: 2, heads: 2, qkv_bias: true, pool: avg", {3, 32, 32}, 5},
      {"vit_gray_noqkvbias", "patch: 7, width: 32, depth: 2, heads: 2, qkv_bias: false, pool: token", {1, 28, 28}, 5},
  };
  for (const ParityCase& c : cases) {
    SECTION(c.name) {
      const std::string weights = fixture_dir() + c.name + ".safetensors";
      ExperimentSpec spec = parse_spec("backbone: {name: vit, " + c.options + ", init: {safetensors: " + weights +
                                           ", strict: true}}",
                                       "x.yaml");
      auto model = std::make_shared<Classifier>(spec.backbone.build(c.shape), c.classes);
      initialize(*model, spec.backbone_common.init);
      // the head is loaded too (timm's head.weight/head.bias)
      SafetensorsFile w(weights);
      REQUIRE(torch::equal(model->head->weight, w.get("head.weight")));
      REQUIRE(torch::equal(model->head->bias, w.get("head.bias")));
      model->eval();
      torch::NoGradGuard no_grad;
      SafetensorsFile io(fixture_dir() + c.name + "_io.safetensors");
      torch::Tensor x = io.get("__input");
      torch::Tensor features = model->features(x), logits = model->logits(x);
      torch::Tensor want_features = io.get("__features"), want_logits = io.get("__logits");
      REQUIRE(features.sizes() == want_features.sizes());
      REQUIRE(logits.sizes() == want_logits.sizes());
      const double df = (features - want_features).abs().max().item<double>();
      const double dl = (logits - want_logits).abs().max().item<double>();
      INFO(c.name << ": max |features - timm| = " << df << ", max |logits - timm| = " << dl);
      CHECK(df < 1e-4);
      CHECK(dl < 1e-4);
      // the fixtures are O(1): a mistake cannot hide under a tolerance
      CHECK(want_features.std().item<double>() > 0.3);
      CHECK(want_logits.std().item<double>() > 0.3);
    }
  }
}
