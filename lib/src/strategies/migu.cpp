// `migu` (Du et al. 2024, magnitude-based gradient updating), following the official code
// (wenyudu/MIGU, full fine-tuning path): during each training forward pass every selected Linear
// layer sums |y| of its output over all leading positions into a float32 magnitude per output unit
// (padding included), over every micro-batch of an optimizer step; after backward and before
// clipping and the step, rows of the weight gradient whose magnitude is below the T-quantile
// (linear interpolation at position T*(d-1), in float64) are zeroed; ties at the threshold are
// kept, all-zero magnitudes keep every row. Bias gradients are untouched unless `mask_bias`; the
// first task trains unmasked (`skip_first_task`, as the official scripts). The mask multiplies
// gradients, not updates: momentum and Adam moments still move masked rows unless
// `mask_updates: true` (the stricter reading: masked rows, and their optimizer state, are
// restored after the step). Magnitudes never accumulate in evaluation (taps need autograd) and
// are reset after each step and at each task.
//
// On LoRA adapters (paper 3.3; `base: {name: lora | inclora | olora}`, `layers: ['*.lora_*']`):
// an adapter's A is a Linear whose output units are the rank units, masked by the magnitude of
// A's output on dropout(x); B's output units are masked by the magnitude of the adapted layer's
// combined output W x + s B A x (`lora_b_magnitude: combined`, the paper) or of B A x (`own`).
//
// `base:` composes MIGU with any strategy (WrapperStrategy): with replay the magnitudes come from
// the joint current + memory forward; with EWC or A-GEM the mask applies to the gradient they
// produced. A head tied to an embedding shares its Parameter, so masking head rows masks those
// embedding rows too, as the official code does.
#include <cmath>
#include <map>
#include <sstream>
#include <type_traits>

#include <torch/torch.h>

#include "clrun/core/text.hpp"
#include "clrun/models/linear.hpp"
#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {

struct MiguOptions {
  double threshold = 0.7;
  std::vector<std::string> layers = {"all_linear"};
  bool include_head = true;
  bool mask_bias = false;
  bool mask_updates = false;
  bool skip_first_task = true;
  bool conv = false;
  std::string lora_b_magnitude = "combined";
  StrategyBlock base;

  template <class V>
  void fields(V& v) {
    v("threshold", threshold, "T: the fraction of output units whose gradient rows are masked (quantile of magnitudes)",
      in_range(0, 1));
    v("layers", layers, "all_linear, or name patterns (* wildcards) of the Linear layers to mask, e.g. ['*fc0', 'head']");
    v("include_head", include_head, "mask the classifier / LM head too (the official code hooks every Linear)");
    v("mask_bias", mask_bias, "mask bias gradients with the same rows (the official models have no biases)");
    v("mask_updates", mask_updates, "masked rows do not move at all: their weights and optimizer state are restored after the step");
    v("skip_first_task", skip_first_task, "train the first task unmasked (as the official scripts)");
    v("conv", conv, "EXTENSION beyond the paper: mask conv layers too, one magnitude per output channel "
      "(sum of |y| over batch and spatial positions)");
    v("lora_b_magnitude", lora_b_magnitude, "LoRA B's output units: by the adapted layer's combined output "
      "W x + s B A x (the paper) or by B A x alone", one_of({"combined", "own"}));
    v("base", base, "the strategy MIGU wraps: {name: replay, memory_size: 500}, ewc, derpp, lwf, ... (default finetune)");
  }
};

/// The optimizer's state of `p`: LibTorch 1.x keys it by the pointer's text, 2.x by the pointer.
template <class Map>
auto find_state(Map& state, const torch::Tensor& p) {
  if constexpr (std::is_same_v<typename Map::key_type, std::string>) {
    std::ostringstream key;
    key << p.unsafeGetTensorImpl();
    return state.find(key.str());
  } else {
    return state.find(p.unsafeGetTensorImpl());
  }
}

/// One selected layer: its running magnitudes and per-task statistics, all on the device.
struct Unit {
  std::string name;
  nn::TappedLayer* layer;
  torch::Tensor magnitude;     ///< float32 [d_out], this optimizer step
  torch::Tensor previous_top;  ///< bool [d_out]: the previous task's most-updated units
};

/// Selected layers of one width, masked together in one batched op.
struct Group {
  std::vector<std::size_t> units;
  torch::Tensor kept;  ///< float32 [units, d_out]: steps each row was updated, this task
};

class Migu : public WrapperStrategy, public nn::Tap {
 public:
  Migu(const MiguOptions& o, uint64_t seed) : WrapperStrategy(o.base.build(seed)), o_(o) {}

  // -- the tap: magnitudes of every training forward pass ---------------------------------------
  void on_forward(nn::TappedLayer& layer, const torch::Tensor&, const torch::Tensor& output) override {
    auto it = index_.find(&layer);
    if (it == index_.end()) return;
    torch::NoGradGuard no_grad;
    torch::Tensor y = output.detach();
    if (y.scalar_type() != torch::kFloat32) y = y.to(torch::kFloat32);  // bf16/fp16 outputs accumulate in float32
    torch::Tensor a;  // sum of |y| over every position but the unit's (abs + sum: ~10x faster than torch::norm here)
    if (layer.unit_dim() == -1) {
      a = y.reshape({-1, y.size(-1)}).abs().sum(0);
    } else {
      std::vector<int64_t> others;
      for (int64_t d = 0; d < y.dim(); ++d)
        if (d != layer.unit_dim()) others.push_back(d);
      a = y.abs().sum(others);
    }
    for (std::size_t i : it->second) {  // a LoRA layer's output also feeds its B's units (combined)
      Unit& u = units_[i];
      u.magnitude = u.magnitude.defined() ? u.magnitude.add_(a) : (it->second.size() > 1 ? a.clone() : a);
    }
  }

  /// Row masks (bool [..., d_out]) from magnitudes [..., d_out], one per leading index (layers
  /// of equal width are masked in one batched op): kept = a >= quantile(a, T). The position
  /// h = T (d - 1) is computed in float64 on the host and the interpolation is done in the
  /// magnitudes' float32, as torch.quantile on them. Magnitudes are >= 0, so all-zero magnitudes
  /// give threshold 0 and keep every row without a special case.
  static torch::Tensor row_mask(const torch::Tensor& a, double threshold) {
    const int64_t d = a.size(-1);
    const double h = threshold * static_cast<double>(d - 1);
    const int64_t lo = static_cast<int64_t>(std::floor(h)), hi = static_cast<int64_t>(std::ceil(h));
    // The lo-th and hi-th smallest values are the last two of the d - lo largest (topk is about
    // twice as fast as a full sort for these sizes).
    torch::Tensor top = std::get<0>(a.topk(d - lo, /*dim=*/-1, /*largest=*/true, /*sorted=*/true));
    torch::Tensor low = top.select(-1, d - 1 - lo), high = top.select(-1, d - 1 - hi);
    return a.ge(torch::lerp(low, high, h - static_cast<double>(lo)).unsqueeze(-1));
  }

  nlohmann::json describe() const override {
    nlohmann::json j = WrapperStrategy::describe();
    j["per_task"] = diagnostics_;
    return j;
  }

 protected:
  void on_before_task(TaskContext& ctx) override {
    WrapperStrategy::on_before_task(ctx);
    if (units_.empty()) select_layers(ctx.model);
    for (Unit& u : units_) u.magnitude = torch::Tensor();
    for (Group& g : groups_) {
      const Unit& first = units_[g.units[0]];
      g.kept = torch::zeros({static_cast<int64_t>(g.units.size()), first.layer->units()},
                            first.layer->weight_param().options().dtype(torch::kFloat32));
    }
    steps_ = 0;
    masking_ = !(o_.skip_first_task && ctx.task == 0);
    std::vector<nn::TappedLayer*> layers;
    for (auto& [layer, units] : index_) layers.push_back(layer);
    attached_ = std::make_unique<nn::TapGuard>(*this, layers);
  }

  void on_after_backward(StepContext& ctx) override {
    WrapperStrategy::on_after_backward(ctx);
    torch::NoGradGuard no_grad;
    saved_.clear();
    if (env().world) reduce_magnitudes();
    for (Group& g : groups_) {
      std::vector<torch::Tensor> magnitudes;
      for (std::size_t i : g.units) {
        const Unit& u = units_[i];  // a layer not called this step counts as all-zero: kept whole
        magnitudes.push_back(u.magnitude.defined() ? u.magnitude : torch::zeros({u.layer->units()}, g.kept.options()));
      }
      torch::Tensor keep = row_mask(magnitudes.size() == 1 ? magnitudes[0].unsqueeze(0) : torch::stack(magnitudes), o_.threshold);
      g.kept.add_(keep);  // the mean kept fraction over steps is kept.sum() / (steps d) at task end
      if (!masking_) continue;
      for (std::size_t k = 0; k < g.units.size(); ++k) mask_gradients(ctx.optimizer, units_[g.units[k]], keep[k]);
    }
    ++steps_;
  }

  /// Data parallel: each rank's magnitudes cover its shard; summed over the ranks they are the
  /// global batch's, as one process sees them. (The official code averages over ranks: the same
  /// quantile masks, since they do not see a common factor 1/world.)
  void reduce_magnitudes() {
    std::vector<torch::Tensor> all;
    for (Unit& u : units_) {
      if (!u.magnitude.defined())
        u.magnitude = torch::zeros({u.layer->units()}, torch::TensorOptions(torch::kFloat32).device(env().device));
      all.push_back(u.magnitude);
    }
    env().world->all_reduce_sum(all);
  }

  void on_after_step(StepContext& ctx) override {
    restore_rows();
    WrapperStrategy::on_after_step(ctx);
    for (Unit& u : units_) u.magnitude = torch::Tensor();  // the next step starts empty
  }

  void on_after_task(TaskContext& ctx) override {
    attached_.reset();  // e.g. EWC's Fisher pass in the base must not feed the magnitudes
    for (Unit& u : units_) u.magnitude = torch::Tensor();
    WrapperStrategy::on_after_task(ctx);
    nlohmann::json layers = nlohmann::json::object();
    for (Group& g : groups_)
      for (std::size_t k = 0; k < g.units.size(); ++k) layers[units_[g.units[k]].name] = task_diagnostics(units_[g.units[k]], g.kept[static_cast<int64_t>(k)]);
    diagnostics_.push_back({{"task", ctx.task}, {"steps", steps_}, {"layers", layers}});
  }

  /// The mean fraction of rows updated per step, and the paper's observation that tasks light up
  /// different units: the task's most-updated units (as many as 1-T of the layer) against the
  /// previous task's, as a Jaccard index.
  nlohmann::json task_diagnostics(Unit& u, const torch::Tensor& kept) {
    const int64_t d = u.layer->units();
    const int64_t top_k = std::max<int64_t>(1, std::llround((1.0 - o_.threshold) * static_cast<double>(d)));
    torch::Tensor top = torch::zeros({d}, kept.options().dtype(torch::kBool));
    top.index_fill_(0, std::get<1>(kept.topk(top_k)), true);
    nlohmann::json entry = {{"updated_fraction", steps_ ? kept.sum().item<double>() / static_cast<double>(steps_ * d) : 1.0},
                            {"masked", masking_}};
    if (u.previous_top.defined()) {
      const double inter = top.logical_and(u.previous_top).sum().item<double>();
      const double uni = top.logical_or(u.previous_top).sum().item<double>();
      entry["jaccard_with_previous_task"] = uni > 0 ? inter / uni : 1.0;
    }
    u.previous_top = top;
    return entry;
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    WrapperStrategy::save(archive);
    std::vector<torch::Tensor> tops;
    for (const Unit& u : units_) tops.push_back(u.previous_top);
    write_tensors(archive, "previous_top", tops);
    archive.write("diagnostics", c10::IValue(nlohmann::json(diagnostics_).dump()));
  }
  void load(torch::serialize::InputArchive& archive) override {
    WrapperStrategy::load(archive);
    pending_tops_ = read_tensors(archive, "previous_top", env().device);
    c10::IValue d;
    archive.read("diagnostics", d);
    diagnostics_ = nlohmann::json::parse(d.toStringRef()).get<std::vector<nlohmann::json>>();
  }

 private:
  /// Zeroes the gradient rows of `u` where `keep` is false (remembering them for mask_updates).
  void mask_gradients(torch::optim::Optimizer& optimizer, Unit& u, const torch::Tensor& keep) {
    if (o_.mask_updates) save_rows(optimizer, u, keep);
    const torch::Tensor& w = u.layer->weight_param();
    std::vector<int64_t> rows(w.dim(), 1);  // [d, 1] for Linear, [d, 1, 1, 1] for Conv2d
    rows[0] = -1;
    if (w.grad().defined()) w.mutable_grad().mul_(keep.view(rows));  // bool promotes to the gradient's dtype
    const torch::Tensor& b = u.layer->bias_param();
    if (o_.mask_bias && b.defined() && b.grad().defined()) b.mutable_grad().mul_(keep);
  }

  void select_layers(Model& model) {
    std::map<std::string, nn::TappedLayer*> by_name;
    for (auto& [name, layer] : nn::tapped_layers(model)) by_name[name] = layer.get();
    for (auto& [name, layer] : nn::tapped_layers(model)) {
      const bool linear = layer->unit_dim() == -1;
      const bool head = name == "head" || name == "lm_head";
      if ((head && !o_.include_head) || (!linear && !o_.conv)) continue;
      bool selected = !linear;  // conv: every conv layer (the extension)
      for (const std::string& p : o_.layers) selected = selected || (linear && p == "all_linear") || glob_match(p, name);
      if (!selected) continue;
      // A LoRA B (`<layer>.lora_k.B`) reads the adapted layer's output under `combined`.
      nn::TappedLayer* source = layer.get();
      const auto lora = name.rfind(".lora_");
      if (o_.lora_b_magnitude == "combined" && lora != std::string::npos && name.size() > 2 &&
          name.compare(name.size() - 2, 2, ".B") == 0)
        source = by_name.at(name.substr(0, lora));
      index_[source].push_back(units_.size());
      units_.push_back({name, layer.get(), {}, {}});
    }
    for (std::size_t i = 0; i < units_.size() && i < pending_tops_.size(); ++i) units_[i].previous_top = pending_tops_[i];
    std::map<int64_t, std::size_t> by_width;
    for (std::size_t i = 0; i < units_.size(); ++i) {
      auto [it, fresh] = by_width.emplace(units_[i].layer->units(), groups_.size());
      if (fresh) groups_.push_back({});
      groups_[it->second].units.push_back(i);
    }
  }

  /// mask_updates: remember the masked rows' weights and optimizer state to put back after the step.
  void save_rows(torch::optim::Optimizer& optimizer, Unit& u, const torch::Tensor& keep) {
    save_rows_of(optimizer, u.layer->weight_param(), keep);
    if (o_.mask_bias && u.layer->bias_param().defined()) save_rows_of(optimizer, u.layer->bias_param(), keep);
  }
  /// Parameter `p` and its optimizer state (SGD momentum, Adam/AdamW moments).
  void save_rows_of(torch::optim::Optimizer& optimizer, const torch::Tensor& p, const torch::Tensor& keep) {
    std::vector<int64_t> rows(p.dim(), 1);
    rows[0] = -1;
    const torch::Tensor restore = keep.logical_not().view(rows).expand_as(p);
    auto save = [&](const torch::Tensor& t) { saved_.push_back({t, t.detach().clone(), restore}); };
    save(p);
    auto& state = optimizer.state();
    auto it = find_state(state, p);
    if (it == state.end()) return;
    if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(it->second.get()))
      if (sgd->momentum_buffer().defined()) save(sgd->momentum_buffer());
    if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(it->second.get())) save(adam->exp_avg()), save(adam->exp_avg_sq());
    if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(it->second.get())) save(adamw->exp_avg()), save(adamw->exp_avg_sq());
  }
  void restore_rows() {
    torch::NoGradGuard no_grad;
    // (State created by this very step, on a fresh optimizer's first step, holds the masked, zero
    // gradient in those rows already.)
    for (auto& [target, before, rows] : saved_) {
      torch::Tensor t = target;
      t.copy_(torch::where(rows, before, t));
    }
    saved_.clear();
  }

  struct SavedRows {
    torch::Tensor target, before, rows;
  };
  MiguOptions o_;
  std::vector<Unit> units_;
  std::vector<Group> groups_;
  std::map<nn::TappedLayer*, std::vector<std::size_t>> index_;  ///< layer whose output is read -> units it feeds
  std::unique_ptr<nn::TapGuard> attached_;
  std::vector<SavedRows> saved_;
  std::vector<torch::Tensor> pending_tops_;
  std::vector<nlohmann::json> diagnostics_;
  int64_t steps_ = 0;
  bool masking_ = false;
};

}  // namespace

torch::Tensor migu_row_mask(const torch::Tensor& magnitudes, double threshold) { return Migu::row_mask(magnitudes, threshold); }

void register_migu(StrategyRegistry& registry) {
  registry.add<MiguOptions>("migu", "MIGU: only the output units with the largest activation magnitudes get gradient",
                            [](const MiguOptions& o, uint64_t seed) { return std::make_shared<Migu>(o, seed); });
}

}  // namespace clrun
