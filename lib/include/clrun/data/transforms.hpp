// Image transforms on batches: resize, random resized crop, horizontal flip, center crop and
// pad + random crop, on float [B, C, H, W] tensors with pixels in [0, 1]. Random steps draw every
// row's parameters from the generator of their batch, so a run is repeated exactly from its seed.
// Configured as stream.transforms: {train: [steps], test: [steps], mean: [...], std: [...]}.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "clrun/core/config.hpp"

namespace clrun {

/// A transform's size: one number (resize: the shorter side, as torchvision; crops: a square)
/// or [H, W].
struct ImageSize {
  std::vector<int64_t> dims;
};
template <>
struct Decoder<ImageSize> {
  static ImageSize decode(const ConfigNode& node);
};
void to_json(nlohmann::json& j, const ImageSize& s);

/// One step of a pipeline.
class ImageTransform {
 public:
  virtual ~ImageTransform() = default;
  /// Whether it draws from the generator (such steps are for training only).
  virtual bool random() const = 0;
  /// [C, H, W] after the step given [C, H, W] before; an InputError naming the step's config
  /// key when it cannot apply (a crop larger than its input).
  virtual std::vector<int64_t> output_shape(const std::vector<int64_t>& in) const = 0;
  /// `x`: float [B, C, H, W] in [0, 1]; `gen`: the batch's generator (random steps only).
  virtual torch::Tensor apply(const torch::Tensor& x, at::Generator* gen) const = 0;
  /// {kind: {every option}}, as the resolved config shows it.
  virtual nlohmann::json describe() const = 0;
};

/// Steps applied in order.
struct TransformPipeline {
  std::vector<std::shared_ptr<const ImageTransform>> steps;

  bool empty() const { return steps.empty(); }
  bool random() const;
  std::vector<int64_t> output_shape(std::vector<int64_t> shape) const;
  torch::Tensor apply(torch::Tensor x, at::Generator* gen) const;
  nlohmann::json describe() const;
};

/// stream.transforms.
struct TransformsSpec {
  TransformPipeline train;        ///< training batches (random steps allowed)
  TransformPipeline test;         ///< every other input: evaluation, class statistics, memories
  std::vector<double> mean, std;  ///< replace the data set's normalisation when given
  nlohmann::json resolved;        ///< null when the block is absent (the resolved config omits it)

  bool empty() const { return train.empty() && test.empty() && mean.empty() && std.empty(); }
};

/// Reads stream.transforms (absent: empty). Each step is a one-key map, `{kind: options}` or
/// `{kind: value}` for its main option: resize, center_crop, random_resized_crop, random_crop
/// (size), hflip (p). Random steps in `test` are errors.
TransformsSpec parse_transforms(const ConfigNode& node);
/// One step, `{kind: ...}`.
std::shared_ptr<const ImageTransform> parse_transform(const ConfigNode& node);

}  // namespace clrun
