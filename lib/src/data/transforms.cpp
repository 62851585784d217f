// Batched image transforms and their config (stream.transforms). Every step works on the whole
// batch in a few tensor ops; random steps draw their per-row parameters on the CPU from the
// batch's generator (a handful of numbers per row) and move them to the device once.
#include "clrun/data/transforms.hpp"

#include <array>
#include <cmath>

#include <torch/torch.h>

#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"

namespace clrun {

ImageSize Decoder<ImageSize>::decode(const ConfigNode& node) {
  ImageSize s;
  if (node.yaml().IsScalar()) s.dims = {Decoder<int64_t>::decode(node)};
  else if (node.yaml().IsSequence()) s.dims = Decoder<std::vector<int64_t>>::decode(node);
  else node.fail("expected a size: one number or [H, W]");
  if (s.dims.empty() || s.dims.size() > 2) node.fail("expected a size: one number or [H, W]");
  for (int64_t d : s.dims)
    if (d < 1 || d > 16384) node.fail("size " + std::to_string(d) + " must be in [1, 16384]");
  return s;
}

void to_json(nlohmann::json& j, const ImageSize& s) {
  if (s.dims.empty()) j = nullptr;
  else if (s.dims.size() == 1) j = s.dims[0];
  else j = s.dims;
}

namespace {

namespace F = torch::nn::functional;

const std::vector<std::string> kModes = {"bilinear", "bicubic", "nearest"};

/// Python's round() (half to even), which torchvision's crops use.
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out;
  for (int64_t d : s) out += (out.empty() ? "" : "x") + std::to_string(d);
  return out;
}

/// [h, w] of a crop size (one number: a square).
std::pair<int64_t, int64_t> crop_size(const ImageSize& s) {
  return {s.dims.at(0), s.dims.size() == 1 ? s.dims[0] : s.dims[1]};
}

void require_size(const ConfigNode& node, const ImageSize& size) {
  if (size.dims.empty()) node.child("size").fail("required: one number or [H, W]");
}

void require_range(const ConfigNode& node, const char* key, const std::vector<double>& v, double max) {
  if (v.size() != 2 || !(v[0] > 0) || v[0] > v[1] || v[1] > max)
    node.child(key).fail("expected [min, max] with 0 < min <= max" + (std::isfinite(max) ? " <= " + std::to_string(max).substr(0, 3) : std::string()));
}

/// Resampling of the whole batch to [h, w] (identity when the size is already right).
torch::Tensor resample(const torch::Tensor& x, int64_t h, int64_t w, const std::string& mode, bool antialias) {
  if (x.size(2) == h && x.size(3) == w) return x;
  auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w});
  if (mode == "nearest") {
    options.mode(torch::kNearest);
  } else {
    if (mode == "bicubic") options.mode(torch::kBicubic);
    else options.mode(torch::kBilinear);
    options.align_corners(false).antialias(antialias);
  }
  torch::Tensor y = F::interpolate(x, options);
  return mode == "bicubic" ? y.clamp_(0, 1) : y;  // cubic overshoots; PIL's uint8 output clamps too
}

// ---- options -------------------------------------------------------------------------------

struct ResizeOptions {
  ImageSize size;
  std::string interpolation = "bilinear";
  bool antialias = true;
  template <class V>
  void fields(V& v) {
    v("size", size, "one number: the shorter side, aspect ratio kept (torchvision's Resize(int)); [H, W]: exactly");
    v("interpolation", interpolation, "resampling filter", one_of(kModes));
    v("antialias", antialias, "low-pass filter when shrinking, as PIL (bilinear and bicubic)");
  }
  void validate(const ConfigNode& node) const { require_size(node, size); }
};

struct CenterCropOptions {
  ImageSize size;
  template <class V>
  void fields(V& v) {
    v("size", size, "crop size: one number (a square) or [H, W]; larger than the input is an error");
  }
  void validate(const ConfigNode& node) const { require_size(node, size); }
};

struct RandomResizedCropOptions {
  ImageSize size;
  std::vector<double> scale = {0.08, 1.0};
  std::vector<double> ratio = {3.0 / 4.0, 4.0 / 3.0};
  std::string interpolation = "bilinear";
  template <class V>
  void fields(V& v) {
    v("size", size, "output size: one number (a square) or [H, W]");
    v("scale", scale, "[min, max] fraction of the image's area a crop covers (uniform)");
    v("ratio", ratio, "[min, max] aspect ratio (width / height) of a crop (log-uniform)");
    v("interpolation", interpolation, "resampling filter", one_of(kModes));
  }
  void validate(const ConfigNode& node) const {
    require_size(node, size);
    require_range(node, "scale", scale, 1.0);
    require_range(node, "ratio", ratio, INFINITY);
  }
};

struct HflipOptions {
  double p = 0.5;
  template <class V>
  void fields(V& v) {
    v("p", p, "probability that a row is mirrored left-right", in_range(0, 1));
  }
};

struct RandomCropOptions {
  ImageSize size;
  int64_t padding = 0;
  template <class V>
  void fields(V& v) {
    v("size", size, "crop size: one number (a square) or [H, W]");
    v("padding", padding, "black pixels added on every side before cropping (CIFAR: 4)", at_least(0));
  }
  void validate(const ConfigNode& node) const { require_size(node, size); }
};

// ---- steps ---------------------------------------------------------------------------------

template <class Options>
class Step : public ImageTransform {
 public:
  Step(Options o, std::string kind, std::string where) : o_(std::move(o)), kind_(std::move(kind)), where_(std::move(where)) {}
  nlohmann::json describe() const override { return {{kind_, options_to_json(o_)}}; }

 protected:
  [[noreturn]] void fail(const std::string& message) const { throw InputError(where_ + ": " + message); }
  static at::Generator& generator(at::Generator* gen) {
    if (!gen) throw std::logic_error("a random transform ran without a generator");
    return *gen;
  }
  Options o_;
  std::string kind_, where_;
};

class Resize : public Step<ResizeOptions> {
 public:
  using Step::Step;
  bool random() const override { return false; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& in) const override {
    if (o_.size.dims.size() == 2) return {in[0], o_.size.dims[0], o_.size.dims[1]};
    // torchvision's Resize(int): the shorter side becomes `size`, the longer one is truncated.
    const int64_t s = o_.size.dims[0], h = in[1], w = in[2];
    if (h <= w) return {in[0], s, static_cast<int64_t>(static_cast<double>(s) * w / h)};
    return {in[0], static_cast<int64_t>(static_cast<double>(s) * h / w), s};
  }
  torch::Tensor apply(const torch::Tensor& x, at::Generator*) const override {
    auto shape = output_shape({x.size(1), x.size(2), x.size(3)});
    return resample(x, shape[1], shape[2], o_.interpolation, o_.antialias);
  }
};

class CenterCrop : public Step<CenterCropOptions> {
 public:
  using Step::Step;
  bool random() const override { return false; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& in) const override {
    auto [h, w] = crop_size(o_.size);
    if (h > in[1] || w > in[2]) fail("a " + std::to_string(h) + "x" + std::to_string(w) + " crop is larger than its " + shape_text(in) + " input");
    return {in[0], h, w};
  }
  torch::Tensor apply(const torch::Tensor& x, at::Generator*) const override {
    auto [h, w] = crop_size(o_.size);
    // torchvision's offsets: round((H - h) / 2), half to even.
    const int64_t top = round_half_even((x.size(2) - h) / 2.0), left = round_half_even((x.size(3) - w) / 2.0);
    return x.slice(2, top, top + h).slice(3, left, left + w);
  }
};

class Hflip : public Step<HflipOptions> {
 public:
  using Step::Step;
  bool random() const override { return o_.p > 0 && o_.p < 1; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& in) const override { return in; }
  torch::Tensor apply(const torch::Tensor& x, at::Generator* gen) const override {
    if (o_.p <= 0) return x;
    if (o_.p >= 1) return x.flip({3});
    const int64_t B = x.size(0);
    torch::Tensor flip = torch::rand({B}, generator(gen)).lt(o_.p).to(x.device()).view({B, 1, 1, 1});
    return torch::where(flip, x.flip({3}), x);
  }
};

class RandomCrop : public Step<RandomCropOptions> {
 public:
  using Step::Step;
  bool random() const override { return true; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& in) const override {
    auto [h, w] = crop_size(o_.size);
    const int64_t p = o_.padding;
    if (h > in[1] + 2 * p || w > in[2] + 2 * p)
      fail("a " + std::to_string(h) + "x" + std::to_string(w) + " crop is larger than its " + shape_text(in) +
           " input padded by " + std::to_string(p));
    return {in[0], h, w};
  }
  torch::Tensor apply(const torch::Tensor& x, at::Generator* gen) const override {
    auto [h, w] = crop_size(o_.size);
    const int64_t p = o_.padding, B = x.size(0), C = x.size(1);
    torch::Tensor padded = p > 0 ? F::pad(x, F::PadFuncOptions({p, p, p, p})) : x.contiguous();
    const int64_t Hp = padded.size(2), Wp = padded.size(3);
    // Every row's window as flat indices into its padded planes: one gather for the batch.
    torch::Tensor top = torch::randint(Hp - h + 1, {B, 1, 1}, generator(gen), torch::kInt64);
    torch::Tensor left = torch::randint(Wp - w + 1, {B, 1, 1}, generator(gen), torch::kInt64);
    torch::Tensor rows = torch::arange(h, torch::kInt64).view({1, h, 1}), cols = torch::arange(w, torch::kInt64).view({1, 1, w});
    torch::Tensor index = ((top + rows) * Wp + left + cols).view({B, 1, h * w}).to(x.device()).expand({B, C, h * w});
    return padded.reshape({B, C, Hp * Wp}).gather(2, index).view({B, C, h, w});
  }
};

class RandomResizedCrop : public Step<RandomResizedCropOptions> {
 public:
  using Step::Step;
  bool random() const override { return true; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& in) const override {
    auto [h, w] = crop_size(o_.size);
    return {in[0], h, w};
  }

  /// torchvision's RandomResizedCrop.get_params for one row, from its uniforms: 10 tries of
  /// (area fraction uniform in scale, aspect ratio log-uniform in ratio), the first crop that
  /// fits is placed uniformly; else the center crop closest to the ratio range.
  std::array<int64_t, 4> crop_box(int64_t H, int64_t W, const double* tries, const double* place) const {
    const double area = static_cast<double>(H * W);
    const double log_lo = std::log(o_.ratio[0]), log_hi = std::log(o_.ratio[1]);
    for (int k = 0; k < 10; ++k) {
      const double target = area * (o_.scale[0] + tries[2 * k] * (o_.scale[1] - o_.scale[0]));
      const double aspect = std::exp(log_lo + tries[2 * k + 1] * (log_hi - log_lo));
      const int64_t w = round_half_even(std::sqrt(target * aspect)), h = round_half_even(std::sqrt(target / aspect));
      if (0 < w && w <= W && 0 < h && h <= H) {
        const auto top = static_cast<int64_t>(place[0] * static_cast<double>(H - h + 1));
        const auto left = static_cast<int64_t>(place[1] * static_cast<double>(W - w + 1));
        return {top, left, h, w};
      }
    }
    const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
    int64_t w = W, h = H;
    if (in_ratio < o_.ratio[0]) h = round_half_even(static_cast<double>(w) / o_.ratio[0]);
    else if (in_ratio > o_.ratio[1]) w = round_half_even(static_cast<double>(h) * o_.ratio[1]);
    return {(H - h) / 2, (W - w) / 2, h, w};
  }

  torch::Tensor apply(const torch::Tensor& x, at::Generator* gen) const override {
    auto [oh, ow] = crop_size(o_.size);
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    torch::Tensor tries = torch::rand({B, 10, 2}, generator(gen), torch::kFloat64);
    torch::Tensor place = torch::rand({B, 2}, generator(gen), torch::kFloat64);
    // Each row's crop as an affine map of the output grid into the input (align_corners=false
    // coordinates): x_in = (w / W) x_out + (2 left + w) / W - 1, the same for y.
    torch::Tensor theta = torch::zeros({B, 2, 3}, torch::kFloat32);
    auto t = theta.accessor<float, 3>();
    const double* tr = tries.data_ptr<double>();
    const double* pl = place.data_ptr<double>();
    for (int64_t b = 0; b < B; ++b) {
      auto [top, left, h, w] = crop_box(H, W, tr + b * 20, pl + b * 2);
      t[b][0][0] = static_cast<float>(static_cast<double>(w) / W);
      t[b][0][2] = static_cast<float>((2.0 * left + w) / W - 1.0);
      t[b][1][1] = static_cast<float>(static_cast<double>(h) / H);
      t[b][1][2] = static_cast<float>((2.0 * top + h) / H - 1.0);
    }
    torch::Tensor grid = F::affine_grid(theta.to(x.device()), {B, C, oh, ow}, /*align_corners=*/false);
    // grid_sampler modes: 0 bilinear, 1 nearest, 2 bicubic; padding 1 = border, so edge pixels
    // are sampled as interpolate samples them (clamped), not blended with zeros.
    const int64_t mode = o_.interpolation == "bilinear" ? 0 : o_.interpolation == "nearest" ? 1 : 2;
    torch::Tensor y = torch::grid_sampler(x.to(torch::kFloat32), grid, mode, /*padding_mode=*/1, /*align_corners=*/false);
    return mode == 2 ? y.clamp_(0, 1) : y;
  }
};

/// Reads only the main option from a scalar: `{hflip: 0.5}` is `{hflip: {p: 0.5}}`.
class ShorthandReader {
 public:
  ShorthandReader(ConfigNode node, const char* key) : node_(std::move(node)), key_(key) {}
  template <class T>
  void operator()(const char* key, T& value, const char*, const Check& check = {}) {
    if (std::string(key) != key_) return;
    value = decode<T>(node_);
    detail::check_value(node_, value, check);
  }

 private:
  ConfigNode node_;
  std::string key_;
};

template <class T, class Options>
std::shared_ptr<const ImageTransform> make_step(const ConfigNode& value, const std::string& kind, const char* main_key) {
  Options o;
  if (value.present() && !value.is_map()) {
    ShorthandReader reader(value, main_key);
    o.fields(reader);
    if constexpr (has_validate<Options>::value) o.validate(value);
  } else {
    o = read_options<Options>(value);
  }
  return std::make_shared<T>(std::move(o), kind, value.where());
}

struct Kind {
  const char* name;
  std::shared_ptr<const ImageTransform> (*make)(const ConfigNode&, const std::string&, const char*);
  const char* main_key;
};

const std::vector<Kind>& kinds() {
  static const std::vector<Kind> k = {
      {"resize", make_step<Resize, ResizeOptions>, "size"},
      {"center_crop", make_step<CenterCrop, CenterCropOptions>, "size"},
      {"random_resized_crop", make_step<RandomResizedCrop, RandomResizedCropOptions>, "size"},
      {"random_crop", make_step<RandomCrop, RandomCropOptions>, "size"},
      {"hflip", make_step<Hflip, HflipOptions>, "p"},
  };
  return k;
}

TransformPipeline parse_pipeline(const ConfigNode& node, bool training) {
  TransformPipeline pipeline;
  if (!node.present()) return pipeline;
  if (!node.yaml().IsSequence()) node.fail("expected a list of transforms, e.g. [{resize: 256}, {center_crop: 224}]");
  for (std::size_t i = 0; i < node.yaml().size(); ++i) {
    ConfigNode item = node.element(i);
    auto step = parse_transform(item);
    if (!training && step->random())
      item.fail("a random transform: test transforms must be deterministic (random ones go under train)");
    pipeline.steps.push_back(std::move(step));
  }
  return pipeline;
}

}  // namespace

std::shared_ptr<const ImageTransform> parse_transform(const ConfigNode& node) {
  std::vector<std::string> names;
  for (const Kind& k : kinds()) names.emplace_back(k.name);
  if (!node.is_map() || node.yaml().size() != 1)
    node.fail("expected one transform as {kind: options}, e.g. {hflip: 0.5}; kinds: " + join(names, ", "));
  const YAML::Node key_node = node.yaml().begin()->first;
  const std::string kind = key_node.IsScalar() ? key_node.Scalar() : "";
  for (const Kind& k : kinds())
    if (kind == k.name) return k.make(node.child(kind), kind, k.main_key);
  node.fail("unknown transform '" + kind + "'" + did_you_mean(kind, names) + "; kinds: " + join(names, ", "));
}

bool TransformPipeline::random() const {
  for (const auto& s : steps)
    if (s->random()) return true;
  return false;
}

std::vector<int64_t> TransformPipeline::output_shape(std::vector<int64_t> shape) const {
  for (const auto& s : steps) shape = s->output_shape(shape);
  return shape;
}

torch::Tensor TransformPipeline::apply(torch::Tensor x, at::Generator* gen) const {
  for (const auto& s : steps) x = s->apply(x, gen);
  return x;
}

nlohmann::json TransformPipeline::describe() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : steps) out.push_back(s->describe());
  return out;
}

TransformsSpec parse_transforms(const ConfigNode& node) {
  TransformsSpec spec;
  if (!node.present()) return spec;
  node.expect_map("a block like {train: [...], test: [...]}");
  node.check_keys({"train", "test", "mean", "std"});
  spec.train = parse_pipeline(node.child("train"), true);
  spec.test = parse_pipeline(node.child("test"), false);
  for (auto [key, values] : {std::pair{"mean", &spec.mean}, std::pair{"std", &spec.std}}) {
    ConfigNode child = node.child(key);
    if (!child.present()) continue;
    *values = decode<std::vector<double>>(child);
    detail::check_value(child, *values, std::string(key) == "std" ? above(0) : in_range(0, 1));
    if (values->size() != 1 && values->size() != 3) child.fail("expected 1 or 3 values (R, G, B)");
  }
  if (spec.mean.empty() != spec.std.empty())
    node.fail("give mean and std together (or neither: the data set's normalisation)");
  spec.resolved = {{"train", spec.train.describe()}, {"test", spec.test.describe()}};
  if (!spec.mean.empty()) spec.resolved["mean"] = spec.mean, spec.resolved["std"] = spec.std;
  return spec;
}

}  // namespace clrun
