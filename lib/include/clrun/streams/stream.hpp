// Task streams: the data (on the run's device, labels remapped to class-order positions) and the
// list of tasks, each with its train/test rows, its classes and an optional input transform.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "clrun/core/registry.hpp"
#include "clrun/data/batch.hpp"
#include "clrun/data/dataset.hpp"
#include "clrun/data/transforms.hpp"
#include "clrun/streams/class_order.hpp"

namespace clrun {

/// instruction_il: text tasks (each a data set named in its own prompt), scored by generating
/// the answer and comparing it with the label text (exact match).
enum class Scenario { class_il, task_il, domain_il, instruction_il };
std::string to_string(Scenario s);
Scenario scenario_from_string(const std::string& s);

/// A per-task change of the inputs (domain-IL): applied to float batches scaled to [0, 1].
class InputTransform {
 public:
  virtual ~InputTransform() = default;
  virtual torch::Tensor apply(const torch::Tensor& x) const = 0;
  virtual void to(torch::Device device) = 0;
  virtual nlohmann::json describe() const = 0;
  /// True when apply() only moves pixels (a permutation): it then commutes with the per-pixel
  /// scaling, so Stream::prepare applies it to the raw uint8 images (4x fewer bytes moved) and
  /// the result is bit for bit the one of applying it to the scaled float images.
  virtual bool moves_pixels_only() const { return false; }
};

struct Task {
  int index = 0;
  std::string name;              ///< the source data set (text streams); empty otherwise
  int64_t epochs = 0;            ///< epochs of this task; 0 = train.epochs
  std::vector<int64_t> classes;  ///< label ids (class-order positions) of this task
  torch::Tensor train_rows;      ///< int64 rows of Stream::train
  torch::Tensor test_rows;       ///< int64 rows of Stream::test
  std::shared_ptr<InputTransform> transform;  ///< null: inputs as they are
};

class Stream {
 public:
  std::string name;  ///< registry name of the stream kind
  std::string dataset;
  Scenario scenario = Scenario::class_il;
  int64_t num_classes = 0;
  std::vector<int64_t> class_order;  ///< class_order[k] = original label of label id k
  std::vector<std::string> class_names;  ///< by label id
  Split train, test;                 ///< labels are label ids (remapped)
  std::vector<int64_t> input_shape;  ///< [C, H, W]; text: [L]
  std::vector<Task> tasks;
  std::shared_ptr<const Tokenizer> tokenizer;  ///< text streams: set (Split::images are token ids)
  bool is_text() const { return static_cast<bool>(tokenizer); }
  /// What the task loss averages over in `batch`: its rows, or for text its target tokens (one
  /// host sync). Data parallel: a rank's share of a step's loss is its units over the global ones.
  int64_t loss_units(const Batch& batch) const;

  /// Remaps the data set's labels with `order` and takes its data and normalisation.
  Stream(std::string name, const Dataset& data, Scenario scenario, std::vector<int64_t> order);

  int num_tasks() const { return static_cast<int>(tasks.size()); }
  /// Moves data and transforms to `device`. Text data stays on the CPU (batches are padded to
  /// their longest row there) and make_batch moves each batch.
  void to(torch::Device device);
  torch::Device device() const { return device_; }
  /// The batch of `rows` of `split` (targets, index and task ids set): normalised images with
  /// each row's task transform (the train image transforms drawn from `train` when given), or
  /// token ids, attention mask and target ids trimmed to the longest row. `task_ids` undefined:
  /// every row is `tasks[0]`'s.
  Batch make_batch(const Split& split, const torch::Tensor& rows, const torch::Tensor& task_ids,
                   const std::vector<int>& tasks, at::Generator* train = nullptr) const;
  /// Normalised float inputs of `rows` of `split`, with `task`'s transform applied.
  torch::Tensor inputs(const Split& split, const torch::Tensor& rows, const Task& task,
                       at::Generator* train = nullptr) const {
    return prepare(split.images.index_select(0, rows), task, train);
  }
  /// The same when rows belong to several tasks (`task_ids`, all among `tasks`).
  torch::Tensor inputs_by_task(const Split& split, const torch::Tensor& rows, const torch::Tensor& task_ids,
                               const std::vector<int>& tasks, at::Generator* train = nullptr) const {
    return prepare_by_task(split.images.index_select(0, rows), task_ids, tasks, train);
  }
  /// Raw images (the data set's dtype, e.g. uint8 [B, C, H, W]) -> normalised float inputs, with
  /// the test image transforms, or with the train ones drawn from `train` when it is given
  /// (training batches: the Trainer's generator of the batch).
  torch::Tensor prepare(const torch::Tensor& raw, const Task& task, at::Generator* train = nullptr) const;
  /// The same, each row with its own task's transform (replay memories, domain-IL joint).
  torch::Tensor prepare_by_task(const torch::Tensor& raw, const torch::Tensor& task_ids,
                                const std::vector<int>& tasks, at::Generator* train = nullptr) const;
  /// Whether any task has an input transform (domain-IL).
  bool has_transforms() const;
  /// Sets the image transforms (stream.transforms): `test` applies to every input prepare()
  /// makes without a generator (evaluation, for_each_train_batch, memories), `train` to
  /// training batches. input_shape becomes their output shape (both must give the same);
  /// a given mean/std replaces the data set's normalisation. Call before to().
  void set_image_transforms(const TransformsSpec& spec);
  /// Whether training batches get random transforms (the Trainer then seeds a generator per batch).
  bool has_train_transforms() const { return static_cast<bool>(train_transforms_); }
  /// Classes of tasks first..last (inclusive), in label-id order.
  std::vector<int64_t> classes_of(int first, int last) const;
  /// Hyperparameter search: a stratified `fraction` of every class's training rows (drawn with
  /// a fixed generator, the same for every run seed) becomes the evaluation split, replacing the
  /// test set, and leaves the training split.
  void carve_validation(double fraction);
  bool validation = false;  ///< evaluation is on a validation split carved from the training data
  /// Throws InputError naming the first task without training or evaluation samples: a task that
  /// cannot be trained or scored is a wrong config or a broken data set, never a silent skip.
  void check_tasks() const;
  /// Tasks, classes, sizes and transforms, for metrics.json.
  nlohmann::json describe() const;

 private:
  /// Scale and shift of x / 255 / std - mean / std as one multiply-add ([1, C, 1, 1]).
  void set_normalization(const std::vector<double>& mean, const std::vector<double>& std);
  torch::Device device_ = torch::kCPU;
  bool host_images_ = false;  ///< Dataset::host_images: image splits stay on the host
  torch::Tensor scale_, shift_;  ///< [1, C, 1, 1]: x / 255 / std - mean / std in one multiply-add
  std::shared_ptr<const TransformPipeline> train_transforms_, test_transforms_;  ///< null: none
  std::vector<int64_t> data_shape_;  ///< [C, H, W] of the stored images
  nlohmann::json transforms_json_;   ///< for describe(); null: none
};

/// Visits task `task`'s training data in stored order in batches of `batch_size` (inputs
/// prepared as in training, task ids set); `limit` > 0 stops after that many rows.
void for_each_train_batch(const Stream& stream, int task, int64_t batch_size, int64_t limit,
                          const std::function<void(const Batch&)>& fn);

/// A domain-IL stream: `num_tasks` tasks over the whole data set and all its classes, task t's
/// inputs changed by `transform_of(t)` (null: unchanged).
std::shared_ptr<Stream> make_domain_stream(
    const std::string& name, const Dataset& data, int64_t num_tasks,
    const std::function<std::shared_ptr<InputTransform>(int task, const Stream&)>& transform_of);

/// Stream builders get the loaded data set and the run seed.
using StreamRegistry = Registry<Stream, std::shared_ptr<const Dataset>, uint64_t>;
// One register function per stream file; components.cpp calls them all.
void register_split(StreamRegistry& registry);
void register_permuted(StreamRegistry& registry);
void register_rotated(StreamRegistry& registry);
void register_sequence(StreamRegistry& registry);  // one task per source data set (text)

}  // namespace clrun
