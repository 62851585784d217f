// config/: ExperimentSpec loading, overrides, resolution.
#include <catch2/catch.hpp>
#include <filesystem>

#include "clrun/config/spec.hpp"

using namespace clrun;

namespace {
std::string error_of(const std::string& yaml, const std::vector<Override>& overrides = {}) {
  try {
    parse_spec(yaml, "exp.yaml", overrides);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("an empty map resolves to documented defaults", "[config]") {
  ExperimentSpec s = parse_spec("{}", "configs/my_exp.yaml");
  CHECK(s.name == "my_exp");
  CHECK(s.stream.name() == "split");
  CHECK(s.dataset.name() == "fashion-mnist");
  CHECK(s.backbone.name() == "mlp");
  CHECK(s.strategy.name() == "finetune");
  CHECK(s.train.optimizer.name() == "sgd");
  CHECK(s.train.scheduler.name() == "constant");
  CHECK(s.train.logits == "all");
  nlohmann::json r = s.resolved();
  CHECK(r.at("stream").at("dataset").at("root") == "/usr/share/datasets/fashion-mnist");
  CHECK(r.at("train").at("optimizer").at("lr") == 0.01);
}

TEST_CASE("overrides (--set) change values, create blocks and expand shorthands", "[config]") {
  ExperimentSpec s = parse_spec("strategy: finetune\ntrain: {epochs: 3}\n", "exp.yaml",
                                {parse_override("train.optimizer.lr=0.5"), parse_override("train.epochs=7"),
                                 parse_override("backbone.hidden=[8, 4]"), parse_override("strategy.name=joint"),
                                 parse_override("stream.class_order={numpy_seed: 1993}")});
  CHECK(s.train.epochs == 7);
  CHECK(s.resolved().at("train").at("optimizer").at("lr") == 0.5);
  CHECK(s.resolved().at("backbone").at("hidden") == nlohmann::json({8, 4}));
  CHECK(s.strategy.name() == "joint");
  CHECK(s.resolved().at("stream").at("class_order") == nlohmann::json({{"numpy_seed", 1993}}));
  CHECK_THROWS_WITH(parse_override("novalue"), Catch::Contains("expected key.path=value"));
  CHECK_THAT(error_of("{}", {parse_override("train.epochs=0")}), Catch::StartsWith("--set train.epochs: 0 is out of range"));
}

TEST_CASE("spec errors", "[config]") {
  CHECK_THAT(error_of("train: {epochs: 2\n"), Catch::StartsWith("exp.yaml:2:1: YAML syntax error"));
  CHECK_THAT(error_of("trian: {epochs: 2}"), Catch::Contains("trian: unknown key (did you mean 'train'?)"));
  CHECK_THAT(error_of("strategy: {name: finetun}"),
             Catch::Contains("unknown strategy 'finetun' (did you mean 'finetune'?); registered: agem, cumulative, der, derpp, ewc, finetune, inclora, joint"));
  CHECK_THAT(error_of("stream: {name: permuted, increment: 2}"), Catch::Contains("stream.increment: unknown key"));
  CHECK_THAT(error_of("stream: {name: permuted, scenario: class-il}"), Catch::Contains("stream.scenario"));
  CHECK_THAT(error_of("stream: {name: permuted}\ntrain: {logits: current}"),
             Catch::Contains("train.logits: domain-il streams share every class"));
  CHECK_THAT(error_of("stream: {class_order: [1, x]}"), Catch::Contains("stream.class_order[1]: expected an integer"));
  CHECK_THAT(error_of("device: tpu"), Catch::Contains("device: 'tpu' is not a device"));
  CHECK_THAT(error_of("- 1\n- 2\n"), Catch::Contains("expected a map of keys at the top level"));
}

TEST_CASE("scenario-dependent conventions are resolved", "[config]") {
  CHECK(parse_spec("stream: {scenario: task-il}", "x.yaml").train.logits == "current");
  CHECK(parse_spec("stream: {scenario: task-il}\ntrain: {logits: all}", "x.yaml").train.logits == "all");
}

TEST_CASE("the resolved config round-trips through YAML", "[config]") {
  ExperimentSpec s = parse_spec("stream: {class_order: [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]}\ntrain: {optimizer: {name: adamw, lr: 3e-4}}",
                                "x.yaml");
  nlohmann::json r = s.resolved();
  ExperimentSpec again = parse_spec(json_to_yaml(r), "config.yaml");
  CHECK(again.resolved() == r);
}

TEST_CASE("an empty config file is an error naming the file", "[config]") {
  for (const char* text : {"", "\n\n", "# only a comment\n", "~"}) {
    INFO(text);
    CHECK(error_of(text).rfind("exp.yaml: the config is empty", 0) == 0);
  }
}

TEST_CASE("a duplicated key is an error naming both lines", "[config]") {
  CHECK(error_of("seed: 1\nstrategy: finetune\nseed: 2\n") ==
        "exp.yaml:3:1: seed: duplicate key (first set at line 1); remove one of the two");
  CHECK(error_of("train:\n  epochs: 1\n  optimizer: {name: sgd, lr: 0.1, lr: 0.2}\n") ==
        "exp.yaml:3:35: train.optimizer.lr: duplicate key (first set at line 3); remove one of the two");
  CHECK(error_of("stream: {name: split}\nbackbone: {hidden: [{a: 1, a: 2}]}\n")
            .find("backbone.hidden[0].a: duplicate key") != std::string::npos);
  CHECK(error_of("seed: 1\nname: x\n").empty());
}

TEST_CASE("non-finite and overflowing numbers are rejected for float parameters", "[config]") {
  for (const char* v : {".inf", "-.inf", ".nan", ".NaN", ".Inf"}) {
    INFO(v);
    CHECK(error_of(std::string("train: {optimizer: {lr: ") + v + "}}") ==
          std::string("exp.yaml:1:25: train.optimizer.lr: ") + v + " is not a finite number");
  }
  CHECK(error_of("train: {optimizer: {lr: 1e400}}").find("expected a number, got '1e400'") != std::string::npos);
  CHECK(error_of("{}", {parse_override("train.optimizer.weight_decay=.nan")}) ==
        "--set train.optimizer.weight_decay: .nan is not a finite number");
  CHECK(error_of("train: {epochs: 99999999999999999999}").find("expected an integer") != std::string::npos);
  CHECK(error_of("train: {optimizer: {lr: 1e-3}}").empty());
}

TEST_CASE("keys that are not names and text that is not UTF-8 are config errors (fuzzer findings)", "[config]") {
  CHECK(error_of("{[a]: 1}") == "exp.yaml:1:2: (top level): a key must be a plain name, not a list");
  CHECK(error_of("train: {{a: 1}: 2}").rfind("exp.yaml:1:9: train: a key must be a plain name, not a map", 0) == 0);
  CHECK(error_of("name: a" "\xfe" "\n") == "exp.yaml:1:7: name: is not valid UTF-8 text");
  CHECK(error_of("{}", {parse_override("name=b\xc3\x28")}) == "--set name: is not valid UTF-8 text");
  CHECK(error_of("name: \"caf\xc3\xa9 \xe2\x82\xac\"").empty());
}

TEST_CASE("no component declares an option its block reserves", "[config]") {
  const Registries& reg = registries();
  for (const auto& name : reg.backbones.names())
    CHECK_NOTHROW(parse_spec("backbone: {name: " + name + "}", "x.yaml"));
  for (const auto& name : reg.strategies.names()) CHECK_NOTHROW(parse_spec("strategy: {name: " + name + "}", "x.yaml"));
  for (const auto& name : reg.streams.names()) CHECK_NOTHROW(parse_spec("stream: {name: " + name + "}", "x.yaml"));
  for (const auto& name : reg.datasets.names())
    CHECK_NOTHROW(parse_spec("stream: {dataset: {name: " + name + "}}", "x.yaml"));
}

TEST_CASE("the paper's T5-large configs stop with a clear error until the user's weights are there", "[config][text]") {
  const std::string root = std::string(__FILE__).substr(0, std::string(__FILE__).find_last_of('/')) + "/../../configs/lm/";
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("t5_large_", 0) != 0) continue;
    ++seen;
    INFO(name);
    CHECK_THROWS_WITH(load_spec(entry.path().string()), Catch::Contains("backbone.init.safetensors") &&
                                                            Catch::Contains("weights/t5-large/model.safetensors") &&
                                                            Catch::Contains("no such file"));
  }
  CHECK(seen == 10);  // FT, replay, LoRA, IncLoRA, O-LoRA, each with and without MIGU
}
