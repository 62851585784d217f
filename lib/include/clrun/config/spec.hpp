// ExperimentSpec: the parsed, validated, resolved experiment (YAML + --set overrides + flags).
// Parsing builds nothing heavy; `validate` stops here.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clrun/components.hpp"
#include "clrun/core/registry.hpp"
#include "clrun/data/transforms.hpp"
#include "clrun/models/model.hpp"

namespace clrun {

struct TrainSpec {
  int64_t epochs = 1;
  int64_t iterations = 0;  ///< optimizer steps per task; 0 = use epochs
  int64_t batch_size = 32;
  int64_t accumulate_steps = 1;  ///< micro-batches of batch_size per optimizer step
  double grad_clip = 0;    ///< max global L2 norm of the gradients; 0 = off
  std::string reset_optimizer = "every_task";
  bool drop_last = false;
  bool group_by_length = false;  ///< text: megabatches of 50 batches sorted by length (Hugging Face's)
  std::string precision = "fp32";  ///< fp32 | bf16 (autocast)
  std::string logits = "auto";  ///< all | seen | current; auto = current for task-il, else all
  Component<OptimizerRegistry> optimizer;
  Component<SchedulerRegistry> scheduler;

  template <class V>
  void fields(V& v) {
    v("epochs", epochs, "epochs per task", at_least(1));
    v("iterations", iterations, "optimizer steps per task; 0 = use epochs", at_least(0));
    v("batch_size", batch_size, "minibatch size (per micro-batch when accumulating)", at_least(1));
    v("accumulate_steps", accumulate_steps,
      "gradient accumulation: micro-batches of batch_size summed into one optimizer step (loss scaled by 1/N)", at_least(1));
    v("grad_clip", grad_clip, "clip the global gradient L2 norm to this; 0 = off", at_least(0));
    v("reset_optimizer", reset_optimizer, "fresh optimizer state every task, or one for the whole run",
      one_of({"every_task", "never"}));
    v("drop_last", drop_last, "drop the last partial batch of each epoch");
    v("group_by_length", group_by_length,
      "text streams: each epoch's shuffled rows are cut into megabatches of 50 batches, each sorted longest first "
      "(Hugging Face's group_by_length): less padding, batches no longer uniformly random");
    v("precision", precision, "fp32, or bf16 autocast of the forward passes of training and evaluation (for GPUs; "
      "weights, gradients and optimizer state stay fp32; on CPU it runs, mostly slower)", one_of({"fp32", "bf16"}));
    v("logits", logits, "logits the loss sees: all, seen classes, current task's classes; auto = current for task-il, else all",
      one_of({"auto", "all", "seen", "current"}));
  }
};

struct EvalSpec {
  int64_t batch_size = 0;             ///< 0 = auto: eval_batch_size_for(backbone), resolved by parse_spec
  std::string eval_classes = "seen";  ///< class-IL: argmax over seen classes or all
  bool future_tasks = true;           ///< score tasks not yet trained (fwt needs them)
  std::string when = "every_task";    ///< every_task | last
  int64_t max_new_tokens = 50;        ///< text streams: generated tokens at most (</s> included)

  template <class V>
  void fields(V& v) {
    v("batch_size", batch_size,
      "evaluation batch size; 0 = auto, chosen per backbone (cnn, resnet: 128; others: 1000)", at_least(0));
    v("eval_classes", eval_classes, "class-IL prediction over the classes seen so far or all classes",
      one_of({"seen", "all"}));
    v("future_tasks", future_tasks,
      "after each task also score the tasks not yet trained (forward transfer needs them); false: their "
      "accuracy-matrix entries are null and fwt is null");
    v("when", when, "score after every task (the accuracy matrix) or only after the last (earlier rows null; "
      "forgetting and bwt null)", one_of({"every_task", "last"}));
    v("max_new_tokens", max_new_tokens, "text streams: greedy generation stops at </s> or after this many tokens",
      at_least(1));
  }
};

/// eval.batch_size 0 (auto) resolved for a backbone: conv nets evaluate faster in small batches
/// on CPU (cnn on Split FMNIST, CPU seconds of a run that is almost all evaluation: 64: 12.8, 128: 12.0, 256: 17.6,
/// 1000: 24.8), MLPs and ViTs in large ones.
int64_t eval_batch_size_for(const std::string& backbone, int64_t configured);

struct OutputSpec {
  std::string dir = "results/runs";
  std::string checkpoints = "every_task";

  template <class V>
  void fields(V& v) {
    v("dir", dir, "parent directory of run directories");
    v("checkpoints", checkpoints, "keep a checkpoint of every task, only the last, or none (no resume)",
      one_of({"every_task", "last", "none"}));
  }
};

/// Keys of the stream block that every stream has.
struct StreamCommon {
  double validation = 0;  ///< fraction of training data held out for evaluation; 0 = test set

  template <class V>
  void fields(V& v) {
    v("validation", validation,
      "hold out this stratified fraction of the training data and evaluate on it instead of the test set "
      "(hyperparameter search); 0 = evaluate on the test set", in_range(0, 0.9));
  }
};

/// Keys of the backbone block that every backbone has.
struct BackboneCommon {
  BackboneInit init;

  template <class V>
  void fields(V& v) {
    v("init", init, "parameter init: default (the layers' own), xavier_uniform (Xavier weights, zero biases, as "
      "Mammoth) or {safetensors: PATH, strict: true} (pre-trained weights by the backbone's public names)");
  }
};

struct ExperimentSpec {
  std::string name;
  uint64_t seed = 0;
  std::string device = "auto";
  int64_t threads = 0;  ///< torch intra-op threads; 0 = library default
  Component<DatasetRegistry> dataset;
  Component<StreamRegistry> stream;
  Component<BackboneRegistry> backbone;
  Component<StrategyRegistry> strategy;
  StreamCommon stream_common;
  TransformsSpec transforms;  ///< stream.transforms: image transforms of training and test inputs
  BackboneCommon backbone_common;
  TrainSpec train;
  EvalSpec eval;
  OutputSpec output;
  std::string source_file;  ///< the YAML file it came from

  template <class V>
  void fields(V& v) {
    v("name", name, "experiment name (default: the config file's stem)");
    v("seed", seed, "run seed: model init, shuffling, permutations");
    v("device", device, "auto | cpu | cuda | cuda:N");
    v("threads", threads, "torch intra-op threads; 0 = library default", at_least(0));
  }

  /// The full resolved config: every key with its effective value.
  nlohmann::json resolved() const;
};

/// One --set override: "train.optimizer.lr=0.1" (the value is parsed as YAML).
struct Override {
  std::string path, value;
};
Override parse_override(const std::string& text);

/// Loads `path`, applies overrides in order, parses and validates everything. Throws
/// InputError with file:line:column and key path on any problem.
ExperimentSpec load_spec(const std::string& path, const std::vector<Override>& overrides = {});
/// The same from YAML text (tests, resolved configs); `source_name` is used in messages.
ExperimentSpec parse_spec(const std::string& yaml_text, const std::string& source_name,
                          const std::vector<Override>& overrides = {});

/// JSON -> YAML text (for the run directory's config.yaml).
std::string json_to_yaml(const nlohmann::json& j);

}  // namespace clrun
