// core/: config nodes, readers, checks, registry, text helpers.
#include <catch2/catch.hpp>

#include "clrun/core/config.hpp"
#include "clrun/core/registry.hpp"
#include "clrun/core/text.hpp"

using namespace clrun;

namespace {

struct Opts {
  double lr = 0.1;
  int64_t steps = 5;
  std::string mode = "a";
  std::vector<int64_t> sizes = {1, 2};
  bool flag = false;
  template <class V>
  void fields(V& v) {
    v("lr", lr, "learning rate", above(0));
    v("steps", steps, "steps", at_least(1));
    v("mode", mode, "mode", one_of({"a", "b"}));
    v("sizes", sizes, "sizes", at_least(1));
    v("flag", flag, "a flag");
  }
};

ConfigNode node_of(const std::string& yaml, const std::string& key = "block") {
  auto src = std::make_shared<ConfigSource>();
  src->file = "exp.yaml";
  return ConfigNode(YAML::Load(yaml), "", src).child(key);
}

std::string error_of(const std::string& yaml) {
  try {
    read_options<Opts>(node_of(yaml));
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("read_options fills defaults and reads values", "[core][config]") {
  Opts o = read_options<Opts>(node_of("block: {lr: 0.5, sizes: [3, 4], flag: true}"));
  CHECK(o.lr == 0.5);
  CHECK(o.steps == 5);
  CHECK(o.sizes == std::vector<int64_t>{3, 4});
  CHECK(o.flag);
  Opts d = read_options<Opts>(node_of("other: 1"));  // absent block: all defaults
  CHECK(d.lr == 0.1);
  nlohmann::json j = options_to_json(o);
  CHECK(j.at("lr") == 0.5);
  CHECK(j.at("mode") == "a");
}

TEST_CASE("config errors name the file, line, column and key path", "[core][config]") {
  SECTION("wrong type") {
    std::string e = error_of("block:\n  steps: abc\n");
    CHECK(e == "exp.yaml:2:10: block.steps: expected an integer, got 'abc'");
  }
  SECTION("out of range") {
    CHECK_THAT(error_of("block: {lr: -1}"), Catch::Contains("block.lr: -1.0 is out of range: must be > 0"));
  }
  SECTION("element of a list") {
    CHECK_THAT(error_of("block: {sizes: [1, 0]}"), Catch::Contains("block.sizes[1]: 0 is out of range"));
  }
  SECTION("choice") {
    CHECK_THAT(error_of("block: {mode: c}"), Catch::Contains("block.mode: \"c\" is not allowed"));
  }
  SECTION("unknown key with did-you-mean") {
    std::string e = error_of("block:\n  lr: 0.1\n  stesp: 3\n");
    CHECK_THAT(e, Catch::StartsWith("exp.yaml:3:3: block.stesp: unknown key (did you mean 'steps'?)"));
    CHECK_THAT(e, Catch::Contains("known keys here: flag, lr, mode, sizes, steps"));
  }
  SECTION("a list where a map is expected") {
    CHECK_THAT(error_of("block: [1, 2]"), Catch::Contains("block: expected a map of parameters"));
  }
}

TEST_CASE("overridden keys are reported as --set", "[core][config]") {
  auto src = std::make_shared<ConfigSource>();
  src->file = "exp.yaml";
  src->overridden.insert("block.lr");
  ConfigNode n = ConfigNode(YAML::Load("block: {lr: -2}"), "", src).child("block");
  CHECK_THROWS_WITH(read_options<Opts>(n), Catch::StartsWith("--set block.lr: "));
}

TEST_CASE("checks describe themselves", "[core][config]") {
  CHECK(in_range(0, 1).describe() == ">= 0, <= 1");
  CHECK(above(0).violation(0.0) != "");
  CHECK(above(0).violation(1e-9) == "");
  CHECK(at_least(2).violation(2.0) == "");
}

TEST_CASE("text helpers", "[core][text]") {
  CHECK(normalize_name("Fashion_MNIST") == "fashion-mnist");
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(did_you_mean("finetun", {"finetune", "joint"}) == " (did you mean 'finetune'?)");
  CHECK(did_you_mean("zzzzzz", {"finetune", "joint"}).empty());
}

namespace {
struct Thing {
  virtual ~Thing() = default;
  int value = 0;
};
struct ThingOptions {
  int64_t value = 7;
  template <class V>
  void fields(V& v) { v("value", value, "the value"); }
};
}  // namespace

TEST_CASE("registry: normalised names, duplicates refused, unknown names list candidates", "[core][registry]") {
  Registry<Thing, int> reg("thing");
  reg.add<ThingOptions>("My_Thing", "a thing", [](const ThingOptions& o, int add) {
    auto t = std::make_shared<Thing>();
    t->value = static_cast<int>(o.value) + add;
    return t;
  });
  CHECK(reg.names() == std::vector<std::string>{"my-thing"});
  CHECK_THROWS_AS(reg.add<ThingOptions>("my-thing", "again", [](const ThingOptions&, int) { return std::make_shared<Thing>(); }),
                  std::logic_error);

  auto c = parse_component(reg, node_of("block: {name: MY_THING, value: 2}"));
  CHECK(c.name() == "my-thing");
  CHECK(c.resolved.at("value") == 2);
  CHECK(c.build(10)->value == 12);

  auto shorthand = parse_component(reg, node_of("block: my-thing"));
  CHECK(shorthand.build(0)->value == 7);

  CHECK_THROWS_WITH(parse_component(reg, node_of("block: {name: my-thin}")),
                    Catch::Contains("unknown thing 'my-thin' (did you mean 'my-thing'?); registered: my-thing"));
  CHECK_THROWS_WITH(parse_component(reg, node_of("block: {name: my-thing, valeu: 1}")),
                    Catch::Contains("block.valeu: unknown key (did you mean 'value'?)"));
}
