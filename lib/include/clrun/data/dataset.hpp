// In-memory data sets: the whole split in one uint8 tensor, batches are taken by index.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "clrun/core/registry.hpp"

namespace clrun {

/// One split of a data set.
struct Split {
  torch::Tensor images;  ///< uint8 [N, C, H, W]
  torch::Tensor labels;  ///< int64 [N]
  int64_t size() const { return labels.size(0); }
};

struct Dataset {
  std::string name;
  Split train, test;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  std::vector<double> mean, std;  ///< per channel (or one for all), for inputs scaled to [0, 1]
  /// The `normalize` option of every reader: the data set's statistics, or none (0 and 1).
  void set_normalization(bool normalize, std::vector<double> mean_, std::vector<double> std_) {
    mean = normalize ? std::move(mean_) : std::vector<double>{0.0};
    std = normalize ? std::move(std_) : std::vector<double>{1.0};
  }
  std::vector<int64_t> input_shape() const {
    return {train.images.size(1), train.images.size(2), train.images.size(3)};
  }
};

using DatasetRegistry = Registry<Dataset>;
// One register function per reader file; components.cpp calls them all.
void register_mnist(DatasetRegistry& registry);  // fashion-mnist, mnist
void register_cifar(DatasetRegistry& registry);  // cifar10, cifar100
void register_image_folder(DatasetRegistry& registry);  // image_folder, imagenet-r, imagenet-a

}  // namespace clrun
