// Loading an ExperimentSpec: YAML, --set overrides, component blocks, cross-key checks.
#include "clrun/config/spec.hpp"

#include <filesystem>
#include <map>

#include "clrun/io/atomic.hpp"

namespace clrun {

namespace {

const std::vector<std::string> kBlocks = {"stream", "backbone", "strategy", "train", "eval", "output"};

std::string position(const std::string& source_name, const YAML::Mark& mark) {
  return source_name + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

/// yaml-cpp keeps one of two equal keys silently; a config that says two things must be an error.
void reject_duplicate_keys(const YAML::Node& node, const std::string& source_name, const std::string& path) {
  if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i)
      reject_duplicate_keys(node[i], source_name, path + "[" + std::to_string(i) + "]");
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, YAML::Mark> seen;
  for (const auto& kv : node) {
    std::string key = kv.first.IsScalar() ? kv.first.Scalar() : YAML::Dump(kv.first);
    std::string key_path = path.empty() ? key : path + "." + key;
    auto [it, fresh] = seen.emplace(key, kv.first.Mark());
    if (!fresh)
      throw InputError(position(source_name, kv.first.Mark()) + ": " + key_path +
                       ": duplicate key (first set at line " + std::to_string(it->second.line + 1) +
                       "); remove one of the two");
    reject_duplicate_keys(kv.second, source_name, key_path);
  }
}

YAML::Node load_yaml(const std::string& text, const std::string& source_name) {
  YAML::Node yaml;
  try {
    yaml = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw InputError(position(source_name, e.mark) + ": YAML syntax error: " + e.msg);
  }
  if (!yaml.IsDefined() || yaml.IsNull())
    throw InputError(source_name + ": the config is empty; expected a map of keys such as " +
                     "'strategy: finetune' (write '{}' to run every default)");
  reject_duplicate_keys(yaml, source_name, "");
  return yaml;
}

void apply_override(YAML::Node& root, const Override& o) {
  YAML::Node value;
  try {
    value = YAML::Load(o.value);
  } catch (const YAML::ParserException& e) {
    throw InputError("--set " + o.path + ": the value '" + o.value + "' is not valid YAML: " + e.msg);
  }
  std::vector<std::string> segments;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = o.path.find('.', start);
    segments.push_back(o.path.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  YAML::Node cur(root);
  std::string walked;
  for (std::size_t i = 0; i + 1 < segments.size(); ++i) {
    walked += (i ? "." : "") + segments[i];
    YAML::Node next = cur[segments[i]];
    if (!next.IsDefined() || next.IsNull()) {
      cur[segments[i]] = YAML::Node(YAML::NodeType::Map);
      next.reset(cur[segments[i]]);
    } else if (next.IsScalar()) {
      // `strategy: finetune` shorthand: expand to a block so that strategy.x=... can be set
      YAML::Node block(YAML::NodeType::Map);
      block["name"] = next.Scalar();
      cur[segments[i]] = block;
      next.reset(cur[segments[i]]);
    } else if (!next.IsMap()) {
      throw InputError("--set " + o.path + ": '" + walked + "' is a list, not a block of keys");
    }
    cur.reset(next);  // rebind; plain assignment would overwrite the node's content
  }
  cur[segments.back()] = value;
}

template <class Options>
void fill_options(Options& target, const ConfigNode& node, std::vector<std::string> reserved) {
  node.expect_map("a block of keys");
  ConfigReader reader(node, std::move(reserved));
  target.fields(reader);
  reader.finish();
}

/// Keys shared by every component of a block, read beside the component's own.
template <class Options>
void read_common(Options& target, const ConfigNode& node) {
  if (!node.present() || !node.is_map()) return;  // shorthand `backbone: mlp`: defaults
  ConfigReader reader(node);
  target.fields(reader);
}

}  // namespace

Override parse_override(const std::string& text) {
  std::size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw InputError("--set '" + text + "': expected key.path=value, e.g. --set train.optimizer.lr=0.1");
  Override o{text.substr(0, eq), text.substr(eq + 1)};
  if (o.path.front() == '.' || o.path.back() == '.' || o.path.find("..") != std::string::npos)
    throw InputError("--set '" + text + "': '" + o.path + "' is not a key path like train.optimizer.lr");
  return o;
}

ExperimentSpec parse_spec(const std::string& yaml_text, const std::string& source_name,
                          const std::vector<Override>& overrides) {
  YAML::Node yaml = load_yaml(yaml_text, source_name);
  auto source = std::make_shared<ConfigSource>();
  source->file = source_name;
  if (!yaml.IsMap()) ConfigNode(yaml, "", source).fail("expected a map of keys at the top level");
  for (const Override& o : overrides) {
    apply_override(yaml, o);
    source->overridden.insert(o.path);
  }
  ConfigNode root(yaml, "", source);
  const Registries& reg = registries();

  ExperimentSpec spec;
  spec.source_file = source_name;
  fill_options(spec, root, kBlocks);
  if (spec.name.empty()) spec.name = std::filesystem::path(source_name).stem().string();

  ConfigNode stream = root.child("stream");
  spec.stream = parse_component(reg.streams, stream, "split", {"dataset", "validation", "transforms"});
  read_common(spec.stream_common, stream);
  spec.transforms = parse_transforms(stream.child("transforms"));
  spec.dataset = parse_component(reg.datasets, stream.child("dataset"), "fashion-mnist");
  spec.backbone = parse_component(reg.backbones, root.child("backbone"), "mlp", {"init"});
  read_common(spec.backbone_common, root.child("backbone"));
  spec.strategy = parse_component(reg.strategies, root.child("strategy"), "finetune");

  ConfigNode train = root.child("train");
  fill_options(spec.train, train, {"optimizer", "scheduler"});
  spec.train.optimizer = parse_component(reg.optimizers, train.child("optimizer"), "sgd");
  spec.train.scheduler = parse_component(reg.schedulers, train.child("scheduler"), "constant");
  fill_options(spec.eval, root.child("eval"), {});
  fill_options(spec.output, root.child("output"), {});

  // Conventions that depend on the scenario are resolved here, so config.yaml shows the value used.
  std::string scenario = spec.stream.resolved.at("scenario");
  if (spec.train.logits == "auto") spec.train.logits = scenario == "task-il" ? "current" : "all";
  spec.eval.batch_size = eval_batch_size_for(spec.backbone.name(), spec.eval.batch_size);
  if (scenario == "instruction-il" && spec.train.logits != "all")
    train.child("logits").fail("text streams have no class logits to restrict: use all (or auto)");
  if (scenario == "domain-il" && spec.train.logits != "all")
    train.child("logits").fail("domain-il streams share every class across tasks: use all (or auto)");
  if (spec.device != "auto" && spec.device != "cpu" && spec.device.rfind("cuda", 0) != 0)
    root.child("device").fail("'" + spec.device + "' is not a device: expected auto, cpu, cuda or cuda:N");
  return spec;
}

int64_t eval_batch_size_for(const std::string& backbone, int64_t configured) {
  if (configured > 0) return configured;
  return backbone == "cnn" || backbone == "resnet" ? 128 : 1000;
}

ExperimentSpec load_spec(const std::string& path, const std::vector<Override>& overrides) {
  if (!std::filesystem::is_regular_file(path)) throw InputError(path + ": config file not found");
  return parse_spec(read_file(path), path, overrides);
}

nlohmann::json ExperimentSpec::resolved() const {
  ExperimentSpec copy = *this;
  JsonWriter top;
  copy.fields(top);
  nlohmann::json j = top.json();
  j["stream"] = stream.resolved;
  j["stream"]["dataset"] = dataset.resolved;
  j["stream"].update(options_to_json(stream_common));
  // Absent unless configured, so that configs without transforms keep their run directories.
  if (!transforms.resolved.is_null()) j["stream"]["transforms"] = transforms.resolved;
  j["backbone"] = backbone.resolved;
  j["backbone"].update(options_to_json(backbone_common));
  j["strategy"] = strategy.resolved;
  JsonWriter train_json;
  copy.train.fields(train_json);
  j["train"] = train_json.json();
  // Absent at their defaults, so that run directories keep their names.
  if (!train.group_by_length) j["train"].erase("group_by_length");
  if (train.precision == "fp32") j["train"].erase("precision");
  j["train"]["optimizer"] = train.optimizer.resolved;
  j["train"]["scheduler"] = train.scheduler.resolved;
  j["eval"] = options_to_json(eval);
  // Absent at its default, so that configs that do not set it keep their run directories.
  if (eval.future_tasks) j["eval"].erase("future_tasks");
  if (eval.when == EvalSpec{}.when) j["eval"].erase("when");
  if (eval.max_new_tokens == EvalSpec{}.max_new_tokens) j["eval"].erase("max_new_tokens");
  j["output"] = options_to_json(output);
  return j;
}

namespace {
void emit(YAML::Emitter& out, const nlohmann::json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      emit(out, it.value());
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    bool flat = std::all_of(j.begin(), j.end(), [](const nlohmann::json& e) { return e.is_primitive(); });
    out << (flat ? YAML::Flow : YAML::Block) << YAML::BeginSeq;
    for (const auto& e : j) emit(out, e);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    out << YAML::DoubleQuoted << j.get<std::string>();
  } else {
    out << j.dump();  // numbers and booleans: JSON's shortest round-trip text is valid YAML
  }
}
}  // namespace

std::string json_to_yaml(const nlohmann::json& j) {
  YAML::Emitter out;
  emit(out, j);
  return std::string(out.c_str()) + "\n";
}

}  // namespace clrun
