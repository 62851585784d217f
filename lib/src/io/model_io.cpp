// clrun export / clrun forward: checkpointed models as safetensors, and models applied to files.
#include "clrun/io/model_io.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include <spdlog/spdlog.h>
#include <torch/serialize.h>

#include "clrun/config/spec.hpp"
#include "clrun/core/device.hpp"
#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"
#include "clrun/io/run_dir.hpp"
#include "clrun/io/safetensors.hpp"
#include "clrun/models/model.hpp"

namespace clrun {

namespace fs = std::filesystem;

namespace {

/// Module::save writes each module's parameters and buffers as tensors and its children as
/// nested archives: walking them gives the state dict without building the model.
void collect(torch::serialize::InputArchive& archive, const std::string& prefix,
             std::vector<std::pair<std::string, torch::Tensor>>& out) {
  for (const std::string& key : archive.keys()) {
    torch::Tensor t;
    if (archive.try_read(key, t)) {
      out.emplace_back(prefix + key, t);
      continue;
    }
    torch::serialize::InputArchive child;
    if (archive.try_read(key, child)) collect(child, prefix + key + ".", out);
  }
}

std::vector<std::string> checkpoint_names(const RunDir& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir.file("checkpoints"), ec))
    if (e.path().extension() == ".pt") names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot be read");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": not valid JSON (" + e.what() + ")");
  }
}

/// Copies `tensors` into `model` by name; every name must match in name and shape.
void load_state(torch::nn::Module& model, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                const std::string& source) {
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, torch::Tensor& dst) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw InputError(source + ": the checkpoint has no " + name + " (another architecture?)");
    if (it->second.sizes() != dst.sizes())
      throw InputError(source + ": " + name + " has shape " + c10::str(it->second.sizes()) + ", the model " +
                       c10::str(dst.sizes()) + " (another input size or architecture?)");
    dst.copy_(it->second);
  };
  for (auto& item : model.named_parameters()) copy(item.key(), item.value());
  for (auto& item : model.named_buffers()) copy(item.key(), item.value());
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> checkpoint_model_tensors(const std::string& checkpoint) {
  torch::serialize::InputArchive archive, model;
  try {
    archive.load_from(checkpoint, torch::kCPU);
  } catch (const c10::Error& e) {
    throw InputError(checkpoint + ": not a clrun checkpoint (" + one_line_error(e.what_without_backtrace()) + ")");
  }
  if (!archive.try_read("model", model)) throw InputError(checkpoint + ": not a clrun checkpoint (no model)");
  std::vector<std::pair<std::string, torch::Tensor>> out;
  collect(model, "", out);
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> public_names(std::vector<std::pair<std::string, torch::Tensor>> tensors,
                                                                const std::string& head_name) {
  const std::string prefix = "backbone.", head = "head.";
  for (auto& [name, t] : tensors) {
    if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
    else if (name.rfind(head, 0) == 0) name = head_name + "." + name.substr(head.size());
  }
  return tensors;
}

std::vector<std::pair<std::string, torch::Tensor>> merge_adapters(std::vector<std::pair<std::string, torch::Tensor>> tensors) {
  std::map<std::string, torch::Tensor> by_name(tensors.begin(), tensors.end());
  std::map<std::string, torch::Tensor> merged;  // layer weight name -> merged weight
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, t] : tensors) {
    const auto lora = name.rfind(".lora_");
    if (lora == std::string::npos) continue;
    const std::string adapter = name.substr(0, name.find('.', lora + 1));  // X.lora_k
    if (name != adapter + ".A.weight") continue;
    const std::string weight = name.substr(0, lora) + ".weight";
    auto base = merged.count(weight) ? merged[weight] : by_name.at(weight).to(torch::kFloat64);
    const double scale = by_name.at(adapter + ".scale").item<double>();
    merged[weight] = base + scale * torch::matmul(by_name.at(adapter + ".B.weight").to(torch::kFloat64), t.to(torch::kFloat64));
  }
  for (auto& [name, t] : tensors) {
    if (name.find(".lora_") != std::string::npos) continue;
    auto it = merged.find(name);
    out.emplace_back(name, it == merged.end() ? t : it->second.to(t.scalar_type()));
  }
  return out;
}

std::string run_checkpoint(const std::string& run_dir, std::optional<int> task) {
  RunDir dir(run_dir);
  if (!fs::is_regular_file(dir.file("config.yaml")))
    throw InputError(run_dir + ": not a run directory (no config.yaml)");
  const std::vector<std::string> have = checkpoint_names(dir);
  const std::string listing = have.empty() ? "none (output.checkpoints: none?)" : join(have, ", ");
  if (task) {
    const std::string path = dir.checkpoint_path(*task);
    if (!fs::is_regular_file(path))
      throw InputError(run_dir + ": no checkpoint after task " + std::to_string(*task + 1) + "; checkpoints: " + listing);
    return path;
  }
  std::optional<int> latest = dir.latest_checkpoint();
  if (!latest) throw InputError(run_dir + ": no checkpoint; checkpoints: " + listing);
  return dir.checkpoint_path(*latest);
}

std::size_t export_run(const std::string& run_dir, std::optional<int> task, const std::string& out) {
  const std::string checkpoint = run_checkpoint(run_dir, task);
  const nlohmann::json config = read_json_file(RunDir(run_dir).file("config.json"));
  // The head's public name is the backbone's (built on the run's input shape, from metrics.json).
  const nlohmann::json metrics = read_json_file(RunDir(run_dir).file("metrics.json"));
  const auto shape = metrics.at("stream").at("input_shape").get<std::vector<int64_t>>();
  // Text models have no separate head (and are not built just for a name: t5-large is 3 GB).
  const bool text = metrics.value("scenario", "") == "instruction-il";
  const std::string head_name = text ? "head" : load_spec(RunDir(run_dir).file("config.yaml")).backbone.build(shape)->head_name();
  auto tensors = public_names(merge_adapters(checkpoint_model_tensors(checkpoint)), head_name);
  std::map<std::string, std::string> metadata = {
      {"format", "pt"},  // what transformers / timm expect of a PyTorch state dict
      {"clrun_run_dir", fs::absolute(run_dir).string()},
      {"clrun_checkpoint", fs::path(checkpoint).filename().string()},
      {"clrun_backbone", config.value("backbone", nlohmann::json::object()).dump()},
      {"clrun_strategy", config.value("strategy", nlohmann::json::object()).dump()},
  };
  write_safetensors(out, tensors, metadata);
  return tensors.size();
}

namespace {

ExperimentSpec model_spec(const std::string& config_or_run, const std::vector<std::string>& sets) {
  std::vector<Override> overrides;
  for (const std::string& s : sets) overrides.push_back(parse_override(s));
  const bool run = fs::is_directory(config_or_run);
  return load_spec(run ? RunDir(config_or_run).file("config.yaml") : config_or_run, overrides);
}

/// The sequence-to-sequence model of a config (backbone.init) or a run (its checkpoint, adapters
/// merged), in eval mode on the spec's device.
std::shared_ptr<LanguageModel> language_model(const ExperimentSpec& spec, const std::string& config_or_run,
                                              std::optional<int> task) {
  torch::manual_seed(spec.seed);
  auto lm = std::dynamic_pointer_cast<LanguageModel>(spec.backbone.build(std::vector<int64_t>{}));
  if (!lm) throw InputError(config_or_run + ": backbone " + spec.backbone.name() + " is not a sequence-to-sequence model");
  if (fs::is_directory(config_or_run)) {
    auto state = public_names(merge_adapters(checkpoint_model_tensors(run_checkpoint(config_or_run, task))));
    load_state(*lm, state, config_or_run);
  } else {
    lm->initialize(spec.backbone_common.init);
  }
  lm->to(resolve_device(spec.device, "device"));
  lm->eval();
  return lm;
}

/// input_ids and attention_mask (default: the non-pad positions) of a token file.
std::pair<torch::Tensor, torch::Tensor> token_inputs(const SafetensorsFile& file, torch::Device device) {
  if (!file.has("input_ids")) throw InputError(file.path() + ": no input_ids (expected int64 [batch, length])");
  torch::Tensor ids = file.get("input_ids", torch::kInt64);
  if (ids.dim() != 2) throw InputError(file.path() + ": input_ids must be [batch, length], got " + c10::str(ids.sizes()));
  torch::Tensor mask = file.has("attention_mask") ? file.get("attention_mask", torch::kInt64) : ids.ne(0).to(torch::kInt64);
  return {ids.to(device), mask.to(device)};
}

void forward_seq2seq(const ExperimentSpec& spec, const std::string& config_or_run, const SafetensorsFile& file,
                     const std::string& out, std::optional<int> task) {
  auto lm = language_model(spec, config_or_run, task);
  const torch::Device device = resolve_device(spec.device, "device");
  auto [ids, mask] = token_inputs(file, device);
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, torch::Tensor>> written = {{"encoder_states", lm->encode(ids, mask)}};
  torch::Tensor labels = file.has("labels") ? file.get("labels", torch::kInt64).to(device) : torch::Tensor();
  torch::Tensor dec_in = file.has("decoder_input_ids") ? file.get("decoder_input_ids", torch::kInt64).to(device)
                         : labels.defined()               ? shift_right(labels)
                                                          : torch::Tensor();
  if (!dec_in.defined()) throw InputError(file.path() + ": give labels or decoder_input_ids (int64 [batch, target length])");
  torch::Tensor logits = lm->logits(ids, mask, dec_in);
  written.emplace_back("logits", logits);
  if (labels.defined()) {
    Batch b;
    b.targets = labels;
    written.emplace_back("loss", Seq2SeqModel(lm).task_loss(logits, b, {}));
  }
  write_safetensors(out, written, {{"clrun_model", config_or_run}});
}

}  // namespace

void generate_file(const std::string& config_or_run, const std::vector<std::string>& sets, const std::string& inputs,
                   const std::string& out, int64_t max_new_tokens, std::optional<int> task) {
  const ExperimentSpec spec = model_spec(config_or_run, sets);
  SafetensorsFile file(inputs);
  auto lm = language_model(spec, config_or_run, task);
  auto [ids, mask] = token_inputs(file, resolve_device(spec.device, "device"));
  Batch b;
  b.inputs = ids;
  b.extra["attention_mask"] = mask;
  write_safetensors(out, {{"generated", lm->generate(b, max_new_tokens)}}, {{"clrun_model", config_or_run}});
}

void forward_file(const std::string& config_or_run, const std::vector<std::string>& sets, const std::string& inputs,
                  const std::string& input_name, const std::string& out, int64_t num_classes, std::optional<int> task) {
  const bool run = fs::is_directory(config_or_run);
  const ExperimentSpec spec = model_spec(config_or_run, sets);

  SafetensorsFile file(inputs);
  if (file.has("input_ids")) return forward_seq2seq(spec, config_or_run, file, out, task);
  std::string name = input_name;
  if (name.empty()) {
    if (file.names().size() != 1)
      throw InputError(inputs + ": holds " + std::to_string(file.names().size()) +
                       " tensors; name the input with --input (tensors: " + join(file.names(), ", ") + ")");
    name = file.names()[0];
  }
  torch::Tensor x = file.get(name);
  if (x.dim() != 4) throw InputError(inputs + ": " + name + " must be [batch, channels, height, width], got " + c10::str(x.sizes()));
  const std::vector<int64_t> input_shape = {x.size(1), x.size(2), x.size(3)};

  std::vector<std::pair<std::string, torch::Tensor>> state;
  if (run) {
    state = checkpoint_model_tensors(run_checkpoint(config_or_run, task));
    for (const auto& [n, t] : state)
      if (n == "head.weight") num_classes = t.size(0);
  } else if (num_classes == 0) {
    const BackboneInit& init = spec.backbone_common.init;
    if (init.scheme == "safetensors") {
      SafetensorsFile weights(init.path);
      if (weights.has("head.weight")) num_classes = weights.info("head.weight").shape.at(0);
    }
    if (num_classes == 0) num_classes = spec.dataset.build()->num_classes;
  }
  torch::manual_seed(spec.seed);
  auto model = std::make_shared<Classifier>(spec.backbone.build(input_shape), num_classes);
  if (run) load_state(*model, state, config_or_run);
  else initialize(*model, spec.backbone_common.init);
  const torch::Device device = resolve_device(spec.device, "device");
  model->to(device);
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor features = model->features(x.to(device));
  torch::Tensor logits = model->head->forward(features);
  write_safetensors(out, {{"features", features}, {"logits", logits}},
                    {{"clrun_model", run ? fs::path(config_or_run).filename().string() : config_or_run},
                     {"clrun_input", name}});
}

}  // namespace clrun
