// `replay` (experience replay, ER), `der` and `derpp` (Buzzega et al. 2020, dark experience
// replay). Each step appends a draw from the memory to the current minibatch and trains on the
// joint batch in one forward/backward; the current rows then enter the memory (after the step,
// as Mammoth does). ER takes the plain mean loss over the joint batch (Mammoth's ER). DER adds
// alpha * MSE(logits of memory rows, logits stored at insertion); DER++ also beta * CE on a
// second memory draw. Memory rows are masked by their own task (train.logits) and weighted
// apart from the current rows through the batch's per-row weights.
#include <torch/torch.h>

#include "clrun/core/error.hpp"
#include "clrun/strategies/memory.hpp"
#include "clrun/strategies/strategy.hpp"

namespace clrun {

namespace {

struct DerOptions : MemoryOptions {
  double alpha = 0.1;
  template <class V>
  void fields(V& v) {
    MemoryOptions::fields(v);
    v("alpha", alpha, "weight of the MSE between memory logits and the logits stored with them", at_least(0));
  }
};

struct DerppOptions : DerOptions {
  double beta = 0.5;
  template <class V>
  void fields(V& v) {
    DerOptions::fields(v);
    v("beta", beta, "weight of the cross-entropy on a second memory draw", at_least(0));
  }
};

class Replay : public Strategy {
 public:
  enum class Kind { er, der, derpp };
  Replay(Kind kind, const DerppOptions& o) : kind_(kind), o_(o), memory_(o.memory_size, memory_policy(o.policy)) {}

  nlohmann::json describe() const override { return {{"memory", memory_.describe()}}; }

 protected:
  void on_setup() override {
    if (kind_ != Kind::er && env().stream && env().stream->is_text())
      throw InputError("strategy: der and derpp store class logits, which text streams (t5) do not have; use replay "
                       "or cumulative (past_fraction)");
  }
  void on_before_forward(StepContext& ctx) override {
    mse_rows_ = mse_global_ = 0;
    if (memory_.empty()) return;
    const int64_t n = o_.replay_batch_size > 0 ? o_.replay_batch_size : ctx.global_current.size();
    if (kind_ == Kind::er) {
      if (const World* world = env().world) {
        // This rank's shard of the draw joins its shard of the batch; its share of the joint
        // batch's mean loss is its loss units over the global joint batch's.
        Batch drawn = memory_.sample(ctx.stream, n, rng());
        const int64_t global_units = ctx.stream.loss_units(ctx.global_current) + ctx.stream.loss_units(drawn);
        ctx.batch = Batch::cat({ctx.batch, own_shard(drawn, world)});
        ctx.share = static_cast<double>(ctx.stream.loss_units(ctx.batch)) / static_cast<double>(global_units);
        return;
      }
      ctx.batch = Batch::cat({ctx.batch, memory_.sample(ctx.stream, n, rng())});
      return;
    }
    // DER: the first draw feeds only the logit MSE (weight 0 in the cross-entropy); DER++'s
    // second, independent draw adds beta * its mean cross-entropy. A term of weight 0 draws
    // nothing, so alpha = beta = 0 is finetune exactly.
    // Data parallel: every rank keeps its shard of each draw, and every row carries its weight in
    // the global batch (current rows 1/B, DER++'s beta/n), so each rank's loss is its part of the
    // single process's as it stands (share 1).
    const World* world = env().world;
    const auto float_options = ctx.batch.targets.options().dtype(torch::kFloat32);
    std::vector<Batch> parts = {ctx.batch};
    if (world) {
      parts[0].weights = torch::full({ctx.batch.size()}, 1.0 / static_cast<double>(ctx.global_current.size()), float_options);
      ctx.share = 1;
    }
    if (o_.alpha > 0) {
      Batch first = memory_.sample(ctx.stream, n, rng());
      mse_global_ = first.size();
      first = own_shard(first, world);
      mse_rows_ = first.size();
      first.weights = torch::zeros({first.size()}, float_options);
      stored_ = first.extra.at("logits");
      parts.push_back(first);
    }
    if (kind_ == Kind::derpp && o_.beta > 0) {
      Batch second = memory_.sample(ctx.stream, n, rng());
      const double weight = o_.beta / static_cast<double>(second.size());
      second = own_shard(second, world);
      second.weights = torch::full({second.size()}, weight, float_options);
      parts.push_back(second);
    }
    ctx.batch = Batch::cat(parts);
  }
  void on_loss_terms(StepContext& ctx) override {
    if (mse_global_ == 0 || o_.alpha == 0) return;
    torch::Tensor out = ctx.output.slice(0, ctx.current_rows, ctx.current_rows + mse_rows_);
    if (!env().world) {
      ctx.add_loss("der_mse", o_.alpha * torch::mse_loss(out, stored_));
      return;
    }
    // This rank's part of the mean over the whole draw (0, not NaN, from an empty shard).
    const double entries = static_cast<double>(mse_global_ * stored_.size(1));
    ctx.add_loss("der_mse", o_.alpha * (out - stored_).pow(2).sum() / entries);
  }
  void on_after_step(StepContext& ctx) override {
    // The whole step's current rows (every rank's, so the memory is the same on every rank),
    // with their logits (data parallel: gathered from the ranks).
    torch::Tensor logits;
    if (kind_ != Kind::er) {
      logits = ctx.output.defined() ? ctx.output.detach().slice(0, 0, ctx.current_rows)
                                    : torch::zeros({0, ctx.stream.num_classes}, torch::TensorOptions(torch::kFloat32).device(env().device));
      logits = ctx.gather_current(logits, env().world);
    }
    memory_.add(ctx.stream, ctx.global_current, logits, ctx.task, rng());
  }
  void save(torch::serialize::OutputArchive& archive) const override { memory_.save(archive); }
  void load(torch::serialize::InputArchive& archive) override { memory_.load(archive, env().device); }

 private:
  Kind kind_;
  DerppOptions o_;
  ReplayMemory memory_;
  int64_t mse_rows_ = 0, mse_global_ = 0;  ///< rows of the MSE draw: this rank's, the whole draw's
  torch::Tensor stored_;
};

}  // namespace

void register_replay(StrategyRegistry& registry) {
  registry.add<MemoryOptions>("replay", "experience replay (ER): a memory draw joins every minibatch",
                              [](const MemoryOptions& o, uint64_t) {
                                DerppOptions d;
                                static_cast<MemoryOptions&>(d) = o;
                                return std::make_shared<Replay>(Replay::Kind::er, d);
                              });
  registry.add<DerOptions>("der", "dark experience replay: memory logits kept close to the stored ones",
                           [](const DerOptions& o, uint64_t) {
                             DerppOptions d;
                             static_cast<DerOptions&>(d) = o;
                             return std::make_shared<Replay>(Replay::Kind::der, d);
                           });
  registry.add<DerppOptions>("derpp", "DER++: DER plus cross-entropy on a second memory draw",
                             [](const DerppOptions& o, uint64_t) { return std::make_shared<Replay>(Replay::Kind::derpp, o); });
}

}  // namespace clrun
