// Model defaults and the Classifier: backbone + linear head, masked cross-entropy.
#include "clrun/models/model.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "clrun/io/safetensors.hpp"
#include "clrun/models/vit.hpp"

#include <torch/torch.h>

namespace clrun {

torch::Tensor Model::task_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) {
  torch::Tensor rows = row_loss(output, batch, masks);
  return batch.weights.defined() ? (rows * batch.weights).sum() : rows.mean();
}

torch::Tensor Model::features(const Batch&) {
  throw std::logic_error("this model has no feature output: the strategy needs a classifier (backbone + head)");
}

torch::Tensor Model::generate(const Batch&, int64_t) {
  throw std::logic_error("this model does not generate text: text streams need a sequence-to-sequence backbone (t5)");
}

void copy_state(const torch::nn::Module& src, torch::nn::Module& dst) {
  torch::NoGradGuard no_grad;
  auto from = src.named_parameters(), to = dst.named_parameters();
  for (auto& item : to) item.value().copy_(from[item.key()]);
  auto from_b = src.named_buffers(), to_b = dst.named_buffers();
  for (auto& item : to_b) item.value().copy_(from_b[item.key()]);
}

Classifier::Classifier(std::shared_ptr<Backbone> backbone_, int64_t num_classes)
    : backbone(register_module("backbone", std::move(backbone_))),
      head(register_module("head", nn::Linear(backbone->feature_dim(), num_classes))) {}

torch::Tensor Classifier::masked(const torch::Tensor& logits, const Batch& batch, const torch::Tensor& masks) const {
  return masks.defined() ? logits + masks.index_select(0, batch.task_ids) : logits;
}

torch::Tensor Classifier::row_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) {
  return torch::nn::functional::cross_entropy(masked(output, batch, masks), batch.targets,
                                              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
}

torch::Tensor Classifier::task_loss(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks) {
  if (batch.weights.defined()) return Model::task_loss(output, batch, masks);
  return torch::cross_entropy_loss(masked(output, batch, masks), batch.targets);  // fused mean
}

torch::Tensor Classifier::sample_targets(const torch::Tensor& output, const Batch& batch, const torch::Tensor& masks,
                                         at::Generator& gen) {
  torch::NoGradGuard no_grad;
  torch::Tensor probs = torch::softmax(masked(output, batch, masks).to(torch::kFloat64), 1).cpu();
  return torch::multinomial(probs, 1, /*replacement=*/true, gen).view(-1).to(output.device());
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

void to_json(nlohmann::json& j, const BackboneInit& init) {
  if (init.scheme == "safetensors") j = {{"safetensors", init.path}, {"strict", init.strict}};
  else j = init.scheme;
}

BackboneInit Decoder<BackboneInit>::decode(const ConfigNode& node) {
  BackboneInit init;
  const YAML::Node& y = node.yaml();
  if (y.IsScalar()) {
    init.scheme = y.Scalar();
    if (init.scheme != "default" && init.scheme != "xavier_uniform")
      node.fail("expected default, xavier_uniform or {safetensors: PATH, strict: true}, got '" + init.scheme + "'");
  } else if (y.IsMap()) {
    node.check_keys({"safetensors", "strict"});
    if (!node.child("safetensors").present()) node.fail("expected {safetensors: PATH, strict: true}");
    init.scheme = "safetensors";
    init.path = clrun::decode<std::string>(node.child("safetensors"));
    if (node.child("strict").present()) init.strict = clrun::decode<bool>(node.child("strict"));
    if (!std::filesystem::is_regular_file(init.path))
      node.child("safetensors").fail(init.path + ": no such file (pre-trained weights are read from a path you give; "
                                     "nothing is downloaded)");
  } else {
    node.fail("expected default, xavier_uniform or {safetensors: PATH, strict: true}");
  }
  return init;
}

namespace {
void xavier(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (const auto& item : module.named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor p = item.value();
    const bool is_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
    if (is_bias) p.zero_();
    else if (p.dim() >= 2) torch::nn::init::xavier_uniform_(p);
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out;
  for (int64_t d : shape) out += (out.empty() ? "" : "x") + std::to_string(d);
  return "[" + out + "]";
}

void load_pretrained(Classifier& model, const BackboneInit& init) {
  SafetensorsFile file(init.path);
  auto params = model.named_parameters();
  // A pre-trained head (named as the backbone's reference names it) is kept only if it fits
  // this run's classes.
  const std::string head = model.backbone->head_name() + ".";
  bool load_head = file.has(head + "weight") &&
                   file.info(head + "weight").shape == model.head->weight.sizes().vec() &&
                   (!file.has(head + "bias") || file.info(head + "bias").shape == model.head->bias.sizes().vec());
  bool resampled = false;
  if (file.has("pos_embed") && params.contains("backbone.pos_embed")) {
    torch::Tensor target = params["backbone.pos_embed"];
    const std::vector<int64_t>& shape = file.info("pos_embed").shape;  // read the data only to resample
    if (shape.size() == 3 && shape[2] == target.size(2) && shape[1] != target.size(1)) {
      torch::Tensor stored = file.get("pos_embed");
      const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(target.size(1) - 1))));
      torch::NoGradGuard no_grad;
      target.copy_(resample_pos_embed(stored, {side, side}));
      spdlog::info("{}: pos_embed resampled from {} to {} (bicubic, as timm)", init.path,
                   shape_text(stored.sizes().vec()), shape_text(target.sizes().vec()));
      resampled = true;
    }
  }
  auto rename = [&](const std::string& name) -> std::string {
    if (name.rfind(head, 0) == 0) return load_head ? "head." + name.substr(head.size()) : "";
    if (resampled && name == "pos_embed") return "";
    return "backbone." + name;
  };
  LoadReport report = load_into(file, model, /*strict=*/false, rename);
  auto& missing = report.missing;
  missing.erase(std::remove_if(missing.begin(), missing.end(),
                               [&](const std::string& n) {
                                 return n.rfind("head.", 0) == 0 || (resampled && n == "backbone.pos_embed");
                               }),
                missing.end());
  if (!load_head && file.has(head + "weight"))
    spdlog::info("{}: {}* of shape {} not loaded (this run has {} classes)", init.path, head,
                 shape_text(file.info(head + "weight").shape), model.head->weight.size(0));
  if (!report.ok()) {
    std::string what;
    auto list = [](std::vector<std::string> names) {  // shown by the file's (public) names
      for (auto& n : names)
        if (n.rfind("backbone.", 0) == 0) n.erase(0, 9);
      std::string out;
      for (std::size_t i = 0; i < names.size() && i < 5; ++i) out += (i ? ", " : "") + names[i];
      return names.size() > 5 ? out + ", ... (" + std::to_string(names.size()) + " in all)" : out;
    };
    std::vector<std::string> mismatched;
    for (const auto& m : report.mismatched)
      mismatched.push_back(m.name + " " + shape_text(m.file_shape) + " in the file, " + shape_text(m.module_shape) + " here");
    if (!missing.empty()) what += "missing: " + list(missing);
    if (!report.unexpected.empty()) what += std::string(what.empty() ? "" : "; ") + "unexpected: " + list(report.unexpected);
    if (!mismatched.empty()) what += std::string(what.empty() ? "" : "; ") + "shape mismatch: " + list(mismatched);
    if (init.strict)
      throw InputError("backbone.init.safetensors: " + init.path + " does not fit the backbone (" + what +
                       ")\nhint: check the backbone's size options, or set strict: false to load what fits");
    spdlog::warn("{}: loaded {} tensors; {}", init.path, report.loaded.size(), what);
  } else {
    spdlog::info("{}: loaded {} tensors", init.path, report.loaded.size() + (resampled ? 1 : 0));
  }
}
}  // namespace

void initialize(Classifier& model, const BackboneInit& init) {
  if (init.scheme == "xavier_uniform") xavier(model);
  else if (init.scheme == "safetensors") load_pretrained(model, init);
}

}  // namespace clrun
