// models/: backbones and the classifier.
#include <catch2/catch.hpp>

#include "clrun/config/spec.hpp"
#include "clrun/models/model.hpp"

using namespace clrun;

TEST_CASE("mlp and cnn produce features of their declared size", "[models]") {
  for (const std::string yaml : {"backbone: {name: mlp, hidden: [20, 7]}", "backbone: {name: cnn, channels: [4, 8], hidden: 7}"}) {
    auto spec = parse_spec(yaml, "x.yaml");
    std::shared_ptr<Backbone> b = spec.backbone.build(std::vector<int64_t>{1, 28, 28});
    CHECK(b->feature_dim() == 7);
    auto model = std::make_shared<Classifier>(b, 10);
    torch::Tensor logits = model->logits(torch::randn({5, 1, 28, 28}));
    CHECK(logits.sizes() == std::vector<int64_t>{5, 10});
    CHECK(model->features(torch::randn({2, 1, 28, 28})).sizes() == std::vector<int64_t>{2, 7});
    // named submodules, so strategies can select layers by name
    auto names = model->named_parameters().keys();
    CHECK(std::find(names.begin(), names.end(), "head.weight") != names.end());
  }
  auto mlp = parse_spec("backbone: {name: mlp, hidden: [20, 7]}", "x.yaml").backbone.build(std::vector<int64_t>{1, 28, 28});
  CHECK(count_parameters(*mlp) == 784 * 20 + 20 + 20 * 7 + 7);
  CHECK_THROWS_WITH(parse_spec("backbone: {name: cnn, channels: [4, 4, 4, 4, 4, 4]}", "x.yaml")
                        .backbone.build(std::vector<int64_t>{1, 28, 28}),
                    Catch::Contains("backbone.channels"));
}
