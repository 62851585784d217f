// `sotu` (Ning et al. 2024, sparse orthogonal parameter tuning) and `ranpac` (McDonnell et al.
// 2023, the reference SoTU compares to: a frozen backbone with a random-projection ridge head).
//
// SoTU has no public code; this follows the paper's description as ../shared/specs/algorithms.md
// states it. theta_0 (the anchor) is the model as `backbone.init` left it (`anchor: pretrained`)
// or after training the first task normally (`anchor: after_first_task`, a base session). Each
// later task t starts from theta_0 (`start_from: anchor`) or from the merged model (`merged`),
// fine-tunes the backbone parameters matching `tune` (the rest frozen through parameter groups;
// the head always trains), and then
//   delta_t = theta_t - start_t,    m_t ~ Bernoulli(keep) per entry,
//   merged  = merged + m_t * delta_t (* 1/keep with `rescale`),
// and the model becomes the merged one. With start_from: anchor, start_t = theta_0 and this is
// the paper's theta = theta_0 + sum_i m_i * delta_i; with `merged` the delta is taken from the
// task's own start so that no earlier delta is counted twice (an explicit reading: the paper
// defines delta against theta_0 only for the default). Masks are drawn per task and tensor on
// the CPU from (run seed, task, tensor index), so they are independent across tasks, identical
// on every device and re-drawable for the diagnostics without being stored. `mask_scope:
// weights_only` masks tensors of two or more dimensions (Linear and conv weights, patch
// embedding, class token, position embedding); the others (biases, LayerNorm) are then merged in
// full (m = 1). Floating-point buffers (BatchNorm statistics) are kept at the anchor's values.
// Extra memory: theta_0 and the merged model (2x the tuned parameters), plus the sparse per-task
// deltas only with `keep_task_deltas`.
//
// Heads (`head:`), fitted after each merge on the current task's training data seen through the
// merged backbone in eval mode. Class statistics are accumulated task by task (G += H^T H,
// Q += H^T Y, class sums), so no old data is needed; old classes keep the statistics of the
// backbone they were computed with (the only option implemented). Classes without statistics
// score -1e30 (RanPAC's head only has rows for seen classes).
// - prototype: cosine similarity to each class's mean feature.
// - ridge: W = (G + lambda I)^-1 Q on the features; lambda from 10^-8..10^8 by the mean squared
//   error on a seeded 80/20 split of the current task (RanPAC's optimise_ridge_parameter), or
//   fixed with `ridge_lambda`.
// - ranpac: the same on H = ReLU(F W_rand), W_rand ~ N(0, 1) of size D x M (`ranpac_dim`).
//   Statistics and solves are float32 as RanPAC's code (`solve_dtype: float64` for stability).
// - linear: the classifier's own head, trained with the backbone at every task.
#include <chrono>
#include <cmath>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "clrun/core/seed.hpp"
#include "clrun/core/text.hpp"
#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {

/// The class-statistics head shared by sotu and ranpac.
struct HeadOptions {
  std::string head = "prototype";
  int64_t ranpac_dim = 10000;
  double ridge_lambda = 0;
  std::string solve_dtype = "float32";
  int64_t stats_batch_size = 256;

  template <class V>
  void fields(V& v) {
    v("head", head, "prototype (cosine to class means), ridge, ranpac (random projection + ReLU + ridge) or linear "
      "(the classifier's trained head)", one_of({"prototype", "ridge", "ranpac", "linear"}));
    v("ranpac_dim", ranpac_dim, "M: the random projection's width (head: ranpac)", at_least(1));
    v("ridge_lambda", ridge_lambda, "ridge penalty; 0 searches 1e-8..1e8 on an 80/20 split of each task (as RanPAC)",
      at_least(0));
    v("solve_dtype", solve_dtype, "dtype of the ridge solves (float32 as RanPAC's code, or float64)",
      one_of({"float32", "float64"}));
    v("stats_batch_size", stats_batch_size, "batch size of the feature pass that fits the head", at_least(1));
  }
};

struct SotuOptions {
  double keep = 0.1;
  bool rescale = false;
  std::string anchor = "pretrained";
  std::string start_from = "anchor";
  std::string mask_scope = "all";
  std::vector<std::string> tune = {"*"};
  bool keep_task_deltas = false;
  bool diagnostics = true;
  double tune_lr_scale = 1;
  double head_lr_scale = 1;
  HeadOptions heads;

  template <class V>
  void fields(V& v) {
    Check keep_range = in_range(0, 1);
    keep_range.min_exclusive = true;
    v("keep", keep, "probability that an entry of a task's delta is kept (the paper: about 1/number of tasks)", keep_range);
    v("rescale", rescale, "multiply kept entries by 1/keep (DARE-style); the paper does not");
    v("anchor", anchor, "theta_0: pretrained (the weights backbone.init gives) or after_first_task (a base session "
      "trained normally)", one_of({"pretrained", "after_first_task"}));
    v("start_from", start_from, "each task fine-tunes from the anchor (the paper) or from the merged model",
      one_of({"anchor", "merged"}));
    v("mask_scope", mask_scope, "all tuned tensors are masked, or weights_only (tensors of 2+ dims; the others merge in full)",
      one_of({"all", "weights_only"}));
    v("tune", tune, "name patterns (* wildcards) of the backbone parameters fine-tuned at each task, e.g. "
      "['blocks.*.attn.*']; [] freezes the backbone after the anchor");
    v("keep_task_deltas", keep_task_deltas, "store each task's sparse delta (pairwise cosine diagnostics; memory keep*T*params)");
    v("diagnostics", diagnostics, "re-draw earlier masks after each merge to measure collisions (O(tasks*params) time)");
    v("tune_lr_scale", tune_lr_scale, "learning-rate multiplier of the tuned backbone parameters at the tasks after the "
      "anchor (a base session trains at the configured rate)", at_least(0));
    v("head_lr_scale", head_lr_scale, "learning-rate multiplier of the classifier head while fine-tuning", at_least(0));
    heads.fields(v);
  }
};

/// `ranpac`: a frozen backbone (after an optional first-session adaptation) and a ridge head.
struct RanpacOptions {
  std::string anchor = "pretrained";
  HeadOptions heads{"ranpac"};

  template <class V>
  void fields(V& v) {
    v("anchor", anchor, "pretrained (frozen from the start) or after_first_task (the first task fine-tunes every "
      "parameter, RanPAC's first-session adaptation, then the backbone freezes)", one_of({"pretrained", "after_first_task"}));
    heads.fields(v);
  }
  SotuOptions sotu() const {
    SotuOptions o;
    o.anchor = anchor;
    o.tune = {};
    o.diagnostics = false;
    o.heads = heads;
    return o;
  }
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// A tuned backbone parameter.
struct Entry {
  std::string name;  ///< without the "backbone." prefix
  torch::Tensor param;
  bool masked = true;
};

/// Class statistics and the head fitted from them.
class ClassHead {
 public:
  ClassHead(HeadOptions o, int64_t num_classes) : o_(std::move(o)), num_classes_(num_classes) {}

  bool active() const { return o_.head != "linear"; }

  /// Adds the statistics of features `f` [n, D] with labels `y` and refits; `gen` orders the
  /// lambda search's split. Returns what to report.
  nlohmann::json update(const torch::Tensor& f, const torch::Tensor& y, uint64_t seed, at::Generator& gen) {
    nlohmann::json info = {{"samples", f.size(0)}};
    const torch::Device device = f.device();
    if (!counts_.defined()) counts_ = torch::zeros({num_classes_}, torch::TensorOptions(torch::kInt64).device(device));
    counts_ += torch::bincount(y, {}, num_classes_);
    if (o_.head == "prototype") {
      if (!sums_.defined()) sums_ = torch::zeros({num_classes_, f.size(1)}, f.options().dtype(torch::kFloat64));
      sums_.index_add_(0, y, f.to(torch::kFloat64));
      derive();
      return info;
    }
    derive();
    torch::Tensor h = expand(f, seed);
    torch::Tensor targets = torch::one_hot(y, num_classes_).to(torch::kFloat32);
    if (!G_.defined()) {
      G_ = torch::zeros({h.size(1), h.size(1)}, h.options());
      Q_ = torch::zeros({h.size(1), num_classes_}, h.options());
    }
    G_ += h.t().mm(h);
    Q_ += h.t().mm(targets);
    double lambda = o_.ridge_lambda;
    if (lambda == 0) lambda = search_lambda(h, targets, gen, info);
    info["lambda"] = lambda;
    W_ = solve(G_, Q_, lambda);
    return info;
  }

  torch::Tensor logits(const torch::Tensor& f, uint64_t seed) {
    if (!counts_.defined()) return torch::zeros({f.size(0), num_classes_}, f.options());
    if (o_.head == "prototype")
      return torch::nn::functional::normalize(f, torch::nn::functional::NormalizeFuncOptions().dim(1))
                 .mm(prototypes_.t()) + unseen_;
    return expand(f, seed).mm(W_) + unseen_;
  }

  /// The ridge solution (G + lambda I)^-1 Q in the configured dtype.
  torch::Tensor solve(const torch::Tensor& G, const torch::Tensor& Q, double lambda) const {
    const auto dtype = o_.solve_dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
    torch::Tensor eye = torch::eye(G.size(0), G.options().dtype(dtype));
    return at::linalg_solve(G.to(dtype) + lambda * eye, Q.to(dtype)).to(torch::kFloat32);
  }

  void save(torch::serialize::OutputArchive& archive) const {
    write_tensors(archive, "head", {counts_, sums_, G_, Q_, W_});
  }
  void load(torch::serialize::InputArchive& archive, torch::Device device) {
    auto t = read_tensors(archive, "head", device);
    counts_ = t.at(0), sums_ = t.at(1), G_ = t.at(2), Q_ = t.at(3), W_ = t.at(4);
    derive();
  }

 private:
  /// What prediction reads, derived from the statistics (so never checkpointed): the -1e30 mask
  /// of classes without statistics and the unit-norm prototypes.
  void derive() {
    if (counts_.defined()) unseen_ = torch::where(counts_ > 0, 0.0, -1e30).to(torch::kFloat32);
    if (sums_.defined())
      prototypes_ = torch::nn::functional::normalize(sums_, torch::nn::functional::NormalizeFuncOptions().dim(1))
                        .to(torch::kFloat32);
  }

  /// ridge: the features; ranpac: ReLU(F W_rand), W_rand drawn once from the run seed.
  torch::Tensor expand(const torch::Tensor& f, uint64_t seed) {
    if (o_.head != "ranpac") return f.to(torch::kFloat32);
    if (!W_rand_.defined()) {
      at::Generator gen = make_generator(seed, {seed_purpose::random_projection});
      W_rand_ = torch::randn({f.size(1), o_.ranpac_dim}, gen, torch::kFloat32).to(f.device());
    }
    return torch::relu(f.to(torch::kFloat32).mm(W_rand_));
  }

  /// RanPAC's optimise_ridge_parameter: fit on the first 80% of the task's (shuffled) rows, pick
  /// the lambda of least mean squared error on the other 20% (the first of equal minima).
  double search_lambda(const torch::Tensor& h, const torch::Tensor& targets, at::Generator& gen, nlohmann::json& info) const {
    const int64_t n = h.size(0), n_fit = static_cast<int64_t>(static_cast<double>(n) * 0.8);
    if (n_fit == 0 || n_fit == n) {
      info["lambda_search"] = "skipped: too few samples for an 80/20 split; lambda = 1";
      return 1.0;
    }
    torch::Tensor order = torch::randperm(n, gen, torch::kInt64).to(h.device());
    torch::Tensor hs = h.index_select(0, order), ys = targets.index_select(0, order);
    torch::Tensor hf = hs.narrow(0, 0, n_fit), yf = ys.narrow(0, 0, n_fit);
    torch::Tensor hv = hs.narrow(0, n_fit, n - n_fit), yv = ys.narrow(0, n_fit, n - n_fit);
    torch::Tensor G = hf.t().mm(hf), Q = hf.t().mm(yf);
    double best = 1, best_loss = INFINITY;
    nlohmann::json losses = nlohmann::json::array();
    for (int e = -8; e <= 8; ++e) {
      const double lambda = std::pow(10.0, e);
      double loss = INFINITY;
      try {
        loss = torch::mse_loss(hv.mm(solve(G, Q, lambda)), yv).item<double>();
      } catch (const c10::Error&) {  // singular: this lambda cannot be used
      }
      losses.push_back(std::isfinite(loss) ? nlohmann::json(loss) : nlohmann::json(nullptr));
      if (loss < best_loss) best_loss = loss, best = lambda;
    }
    info["validation_mse"] = losses;
    return best;
  }

  HeadOptions o_;
  int64_t num_classes_;
  torch::Tensor counts_, unseen_, sums_, prototypes_, G_, Q_, W_, W_rand_;
};

class Sotu : public Strategy {
 public:
  explicit Sotu(SotuOptions o) : o_(std::move(o)) {}

  std::vector<int> training_tasks(int task, int) const override {
    if (o_.tune.empty() && o_.heads.head != "linear" && !anchor_task(task)) return {};  // frozen backbone
    return {task};
  }

  std::vector<ParamGroup> parameter_groups(TaskContext& ctx) override {
    if (anchor_task(ctx.task)) return Strategy::parameter_groups(ctx);
    collect(ctx.model);
    ParamGroup backbone{{}, o_.tune_lr_scale}, head{{}, o_.head_lr_scale};
    for (const Entry& e : entries_) backbone.params.push_back(e.param);
    for (auto& item : ctx.model.named_parameters())
      if (item.key().rfind("head.", 0) == 0) head.params.push_back(item.value());
    std::vector<ParamGroup> groups;
    for (ParamGroup* g : {&backbone, &head})
      if (!g->params.empty()) groups.push_back(std::move(*g));
    return groups;
  }

  nlohmann::json describe() const override {
    int64_t tuned = 0, masked = 0;
    for (const Entry& e : entries_) {
      tuned += e.param.numel();
      if (e.masked) masked += e.param.numel();
    }
    return {{"head", o_.heads.head}, {"tuned_entries", tuned}, {"masked_entries", masked}, {"tasks", tasks_}};
  }

 protected:
  void on_setup() override { head_ = std::make_unique<ClassHead>(o_.heads, env().stream->num_classes); }

  void on_before_task(TaskContext& ctx) override {
    collect(ctx.model);
    if (!anchor_ready_ && o_.anchor == "pretrained") capture_anchor(ctx.model);
    if (!anchor_ready_) return;
    torch::NoGradGuard no_grad;
    const auto& start = o_.start_from == "anchor" ? theta0_ : merged_;
    for (std::size_t k = 0; k < entries_.size(); ++k) entries_[k].param.copy_(start[k]);
    restore_buffers(ctx.model);
  }

  void on_after_task(TaskContext& ctx) override {
    torch::NoGradGuard no_grad;
    nlohmann::json info = {{"task", ctx.task}};
    if (anchor_task(ctx.task)) {
      capture_anchor(ctx.model);
      info["anchor"] = true;
    } else if (!entries_.empty() && ctx.stream.tasks.at(ctx.task).train_rows.size(0) > 0) {
      merge(ctx, info);
    }
    restore_buffers(ctx.model);
    if (head_->active()) fit_head(ctx, info);
    tasks_.push_back(std::move(info));
  }

  torch::Tensor on_eval_forward(const EvalContext& ctx, const Batch& batch) override {
    if (!head_->active()) return ctx.model.forward(batch);
    return head_->logits(ctx.model.features(batch), env().seed);
  }

  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("anchor_ready", c10::IValue(anchor_ready_));
    write_tensors(archive, "theta0", theta0_);
    write_tensors(archive, "merged", merged_);
    write_tensors(archive, "buffers0", buffers0_);
    archive.write("masked_tasks", torch::tensor(masked_tasks_, torch::kInt64));
    for (std::size_t i = 0; i < values_.size(); ++i) write_tensors(archive, "values" + std::to_string(i), values_[i]);
    archive.write("tasks", c10::IValue(tasks_.dump()));
    head_->save(archive);
  }

  void load(torch::serialize::InputArchive& archive) override {
    const torch::Device device = env().device;
    c10::IValue ready, tasks;
    archive.read("anchor_ready", ready);
    anchor_ready_ = ready.toBool();
    theta0_ = read_tensors(archive, "theta0", device);
    merged_ = read_tensors(archive, "merged", device);
    buffers0_ = read_tensors(archive, "buffers0", device);
    torch::Tensor masked;
    archive.read("masked_tasks", masked);
    masked = masked.to(torch::kCPU);
    masked_tasks_.assign(masked.data_ptr<int64_t>(), masked.data_ptr<int64_t>() + masked.numel());
    values_.clear();
    if (o_.keep_task_deltas)
      for (std::size_t i = 0; i < masked_tasks_.size(); ++i) values_.push_back(read_tensors(archive, "values" + std::to_string(i), device));
    archive.read("tasks", tasks);
    tasks_ = nlohmann::json::parse(tasks.toStringRef());
    head_->load(archive, device);
  }

 private:
  bool anchor_task(int task) const { return o_.anchor == "after_first_task" && task == 0; }

  /// The tuned backbone parameters, in the model's order (their index seeds their masks).
  void collect(Model& model) {
    if (collected_) return;
    collected_ = true;
    for (auto& item : model.named_parameters()) {
      const std::string& full = item.key();
      if (full.rfind("backbone.", 0) != 0) continue;
      const std::string name = full.substr(9);
      bool tuned = false;
      for (const std::string& p : o_.tune) tuned = tuned || glob_match(p, name);
      if (!tuned) continue;
      const bool masked = o_.mask_scope == "all" || item.value().dim() >= 2;
      entries_.push_back({name, item.value(), masked});
    }
    if (entries_.empty() && !o_.tune.empty())
      spdlog::warn("sotu: no backbone parameter matches tune: [{}]; the backbone stays frozen", join(o_.tune, ", "));
  }

  std::vector<torch::Tensor> float_buffers(Model& model) const {
    std::vector<torch::Tensor> out;
    for (auto& item : model.named_buffers())
      if (item.key().rfind("backbone.", 0) == 0 && item.value().is_floating_point()) out.push_back(item.value());
    return out;
  }

  void capture_anchor(Model& model) {
    torch::NoGradGuard no_grad;
    theta0_.clear();
    merged_.clear();
    for (const Entry& e : entries_) {
      theta0_.push_back(e.param.detach().clone());
      merged_.push_back(e.param.detach().clone());
    }
    buffers0_.clear();
    for (const torch::Tensor& b : float_buffers(model)) buffers0_.push_back(b.detach().clone());
    anchor_ready_ = true;
  }

  /// Fine-tuning moves BatchNorm statistics; the merged model keeps the anchor's.
  void restore_buffers(Model& model) const {
    if (!anchor_ready_) return;
    auto buffers = float_buffers(model);
    for (std::size_t i = 0; i < buffers.size() && i < buffers0_.size(); ++i) buffers[i].copy_(buffers0_[i]);
  }

  /// Task t's mask of entry k: bool, drawn on the CPU from (seed, t, k).
  torch::Tensor mask(int64_t task, std::size_t k) const {
    at::Generator gen = make_generator(env().seed, {seed_purpose::sotu_mask, static_cast<uint64_t>(task), k});
    const torch::Tensor& p = entries_[k].param;
    return torch::empty(p.sizes(), torch::kFloat32).bernoulli_(o_.keep, gen).to(p.device(), torch::kBool);
  }

  void merge(TaskContext& ctx, nlohmann::json& info) {
    auto start = std::chrono::steady_clock::now();
    const int task = ctx.task;
    const torch::Device device = env().device;
    auto zero = [&] { return torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device)); };
    torch::Tensor kept = zero(), scope = zero(), delta_sq = zero(), masked_sq = zero(), prev_sq = zero(), dot_prev = zero();
    std::vector<torch::Tensor> values;
    for (std::size_t k = 0; k < entries_.size(); ++k) {
      torch::Tensor& p = entries_[k].param;
      torch::Tensor delta = p.detach() - (o_.start_from == "anchor" ? theta0_[k] : merged_[k]);
      torch::Tensor contribution = delta;
      if (entries_[k].masked) {
        torch::Tensor m = mask(task, k);
        contribution = delta * m;
        if (o_.rescale) contribution.div_(o_.keep);
        torch::Tensor previous = merged_[k] - theta0_[k];
        kept += m.sum();
        scope += static_cast<double>(m.numel());
        delta_sq += delta.to(torch::kFloat64).pow(2).sum();
        masked_sq += contribution.to(torch::kFloat64).pow(2).sum();
        prev_sq += previous.to(torch::kFloat64).pow(2).sum();
        dot_prev += (contribution.to(torch::kFloat64) * previous).sum();
        if (o_.keep_task_deltas) values.push_back(contribution.masked_select(m));
      }
      merged_[k] += contribution;
      p.copy_(merged_[k]);
    }
    masked_tasks_.push_back(task);
    if (o_.keep_task_deltas) values_.push_back(std::move(values));
    const double n = scope.item<double>();
    info["keep"] = o_.keep;
    info["kept_fraction"] = n > 0 ? kept.item<double>() / n : 0.0;
    info["delta_norm"] = std::sqrt(delta_sq.item<double>());
    info["masked_delta_norm"] = std::sqrt(masked_sq.item<double>());
    const double denom = std::sqrt(masked_sq.item<double>() * prev_sq.item<double>());
    info["cosine_to_merged"] = denom > 0 ? nlohmann::json(dot_prev.item<double>() / denom) : nlohmann::json(nullptr);
    info["merge_seconds"] = seconds_since(start);
    if (o_.diagnostics) collisions(info, n);
    spdlog::info("sotu: merged task {}: kept {:.4f} of {} entries, |delta| {:.4g}, |masked delta| {:.4g}", task + 1,
                 info["kept_fraction"].get<double>(), static_cast<int64_t>(n), info["delta_norm"].get<double>(),
                 info["masked_delta_norm"].get<double>());
  }

  /// Re-draws the masks of the tasks merged before: the fraction of entries each shares with this
  /// task (expected keep^2), the fraction kept by more than one task so far, and with stored
  /// deltas the pairwise cosine similarity of the masked deltas.
  void collisions(nlohmann::json& info, double scope) const {
    auto start = std::chrono::steady_clock::now();
    const std::size_t t = masked_tasks_.size() - 1;  // this task's position
    const torch::Device device = env().device;
    auto zero = [&] { return torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device)); };
    std::vector<torch::Tensor> overlap(t), dots(t);
    for (std::size_t i = 0; i < t; ++i) overlap[i] = zero(), dots[i] = zero();
    torch::Tensor collided = zero();
    std::vector<torch::Tensor> norms_sq(t + 1);
    for (std::size_t i = 0; i <= t; ++i) norms_sq[i] = zero();
    for (std::size_t k = 0, v = 0; k < entries_.size(); ++k) {
      if (!entries_[k].masked) continue;
      torch::Tensor m = mask(masked_tasks_[t], k);
      torch::Tensor count = m.to(torch::kInt16);
      torch::Tensor dense_t;
      if (o_.keep_task_deltas) {
        dense_t = torch::zeros(m.sizes(), values_[t][v].options()).masked_scatter_(m, values_[t][v]);
        norms_sq[t] += values_[t][v].to(torch::kFloat64).pow(2).sum();
      }
      for (std::size_t i = 0; i < t; ++i) {
        torch::Tensor mi = mask(masked_tasks_[i], k);
        overlap[i] += (mi & m).sum();
        count += mi;
        if (o_.keep_task_deltas) {
          torch::Tensor dense_i = torch::zeros(mi.sizes(), values_[i][v].options()).masked_scatter_(mi, values_[i][v]);
          dots[i] += (dense_i.to(torch::kFloat64) * dense_t).sum();
          norms_sq[i] += values_[i][v].to(torch::kFloat64).pow(2).sum();
        }
      }
      collided += (count >= 2).sum();
      ++v;
    }
    const double keep = o_.keep, tasks = static_cast<double>(t + 1);
    nlohmann::json pairwise = nlohmann::json::array(), cosine = nlohmann::json::array();
    for (std::size_t i = 0; i < t; ++i) {
      pairwise.push_back({{"task", masked_tasks_[i]}, {"rate", overlap[i].item<double>() / scope}});
      if (!o_.keep_task_deltas) continue;
      const double denom = std::sqrt(norms_sq[i].item<double>() * norms_sq[t].item<double>());
      cosine.push_back({{"task", masked_tasks_[i]}, {"value", denom > 0 ? dots[i].item<double>() / denom : 0.0}});
    }
    info["collision"] = {
        {"pairwise", pairwise},
        {"expected_pairwise", keep * keep},
        {"kept_by_several", collided.item<double>() / scope},
        {"expected_kept_by_several",
         1 - std::pow(1 - keep, tasks) - tasks * keep * std::pow(1 - keep, tasks - 1)}};
    if (o_.keep_task_deltas) info["cosine"] = cosine;
    info["diagnostics_seconds"] = seconds_since(start);
  }

  void fit_head(TaskContext& ctx, nlohmann::json& info) {
    auto start = std::chrono::steady_clock::now();
    const bool was_training = ctx.model.is_training();
    ctx.model.eval();
    std::vector<torch::Tensor> features, labels;
    ctx.for_each_train_batch(ctx.task, o_.heads.stats_batch_size, 0, [&](const Batch& b) {
      features.push_back(ctx.model.features(b));
      labels.push_back(b.targets);
    });
    ctx.model.train(was_training);
    if (features.empty()) return;
    nlohmann::json head = head_->update(torch::cat(features), torch::cat(labels), env().seed, rng());
    head["seconds"] = seconds_since(start);
    info["head"] = head;
  }

  SotuOptions o_;
  std::unique_ptr<ClassHead> head_;
  bool collected_ = false, anchor_ready_ = false;
  std::vector<Entry> entries_;
  std::vector<torch::Tensor> theta0_, merged_, buffers0_;
  std::vector<int64_t> masked_tasks_;               ///< tasks whose masked delta was merged, in order
  std::vector<std::vector<torch::Tensor>> values_;  ///< keep_task_deltas: each task's kept entries
  nlohmann::json tasks_ = nlohmann::json::array();  ///< per-task diagnostics for metrics.json
};

}  // namespace

void register_sotu(StrategyRegistry& registry) {
  registry.add<SotuOptions>("sotu", "sparse orthogonal parameter tuning: fine-tune per task, merge random sparse deltas",
                            [](const SotuOptions& o, uint64_t) { return std::make_shared<Sotu>(o); });
  registry.add<RanpacOptions>("ranpac", "frozen backbone with a random-projection ridge head (RanPAC)",
                              [](const RanpacOptions& o, uint64_t) { return std::make_shared<Sotu>(o.sotu()); });
}

}  // namespace clrun
