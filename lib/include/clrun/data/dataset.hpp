// In-memory data sets: the whole split in one tensor, batches are taken by index. Image data
// sets hold uint8 images; text data sets (seq2seq) hold token ids, padded with 0.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <torch/types.h>

#include "clrun/core/registry.hpp"

namespace clrun {

class Tokenizer;

/// One split of a data set.
struct Split {
  torch::Tensor images;   ///< uint8 [N, C, H, W]; text: int64 [N, L] source token ids
  torch::Tensor labels;   ///< int64 [N] class ids; text: -1 for a row whose label is not a class
  torch::Tensor targets;  ///< text only: int64 [N, T] target token ids (label + </s>)
  torch::Tensor groups;   ///< text only: int64 [N] index of the row's source data set (Dataset::groups)
  int64_t size() const { return labels.size(0); }
  /// The rows `rows` of every defined field.
  Split select(const torch::Tensor& rows) const;
};

/// A text data set made of several source data sets (the text benchmark's tasks), in order.
struct DataGroup {
  std::string name;              ///< e.g. "SST-2"
  std::vector<int64_t> classes;  ///< its class ids (its labels.json, in order)
  int64_t epochs = 0;            ///< epochs when it is a task; 0 = train.epochs
  nlohmann::json describe;       ///< files, sizes, caps (for metrics.json)
};

struct Dataset {
  std::string name;
  Split train, test;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  std::vector<double> mean, std;  ///< per channel (or one for all), for inputs scaled to [0, 1]
  std::vector<DataGroup> groups;  ///< text: the source data sets
  std::shared_ptr<const Tokenizer> tokenizer;  ///< text: set; images: null
  /// The splits' images are memory-mapped files (image_folder's cache: disk): they stay on the
  /// host, where the OS pages them in as batches are gathered, and each batch moves to the device.
  bool host_images = false;
  bool is_text() const { return static_cast<bool>(tokenizer); }
  /// The `normalize` option of every reader: the data set's statistics, or none (0 and 1).
  void set_normalization(bool normalize, std::vector<double> mean_, std::vector<double> std_) {
    mean = normalize ? std::move(mean_) : std::vector<double>{0.0};
    std = normalize ? std::move(std_) : std::vector<double>{1.0};
  }
  /// [C, H, W]; text: [L] (the longest stored source).
  std::vector<int64_t> input_shape() const {
    std::vector<int64_t> shape = train.images.sizes().vec();
    shape.erase(shape.begin());
    return shape;
  }
};

using DatasetRegistry = Registry<Dataset>;
// One register function per reader file; components.cpp calls them all.
void register_mnist(DatasetRegistry& registry);  // fashion-mnist, mnist
void register_cifar(DatasetRegistry& registry);  // cifar10, cifar100
void register_image_folder(DatasetRegistry& registry);  // image_folder, imagenet-r, imagenet-a
void register_text_benchmark(DatasetRegistry& registry);  // cl_benchmark (O-LoRA / MIGU text tasks)

}  // namespace clrun
