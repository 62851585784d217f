// `permuted`: domain-incremental; every task is the whole data set under a fixed pixel
// permutation drawn from the run seed and the task index (task 0 the identity by default).
#include "clrun/core/seed.hpp"
#include "clrun/streams/stream.hpp"

namespace clrun {

namespace {

struct PermutedOptions {
  std::string scenario = "domain-il";
  int64_t num_tasks = 5;
  bool identity_first = true;  ///< task 0 sees the original images

  template <class V>
  void fields(V& v) {
    v("scenario", scenario, "permuted streams are domain-incremental", one_of({"domain-il"}));
    v("num_tasks", num_tasks, "number of tasks (permutations)", at_least(1));
    v("identity_first", identity_first, "task 0 uses the identity permutation");
  }
};

class PixelPermutation : public InputTransform {
 public:
  PixelPermutation(torch::Tensor perm, int task) : perm_(std::move(perm)), task_(task) {}
  torch::Tensor apply(const torch::Tensor& x) const override {
    if (x.device().is_cpu() && x.scalar_type() == torch::kUInt8 && x.is_contiguous()) return gather_bytes(x);
    return x.flatten(2).index_select(2, perm_).view(x.sizes());
  }
  bool moves_pixels_only() const override { return true; }
  void to(torch::Device device) override { perm_ = perm_.to(device); }
  nlohmann::json describe() const override {
    torch::Tensor p = perm_.to(torch::kCPU);
    int64_t n = std::min<int64_t>(8, p.numel());
    return {{"kind", "pixel_permutation"},
            {"task", task_},
            {"first_pixels", std::vector<int64_t>(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + n)}};
  }

 private:
  /// out[r][j] = x[r][perm[j]] for every row r (image and channel): a plain loop, several times
  /// faster on CPU than index_select along the last dimension.
  torch::Tensor gather_bytes(const torch::Tensor& x) const {
    const int64_t pixels = perm_.numel();
    const int64_t rows = pixels ? x.numel() / pixels : 0;
    torch::Tensor out = torch::empty_like(x);
    const uint8_t* src = x.data_ptr<uint8_t>();
    uint8_t* dst = out.data_ptr<uint8_t>();
    const int64_t* p = perm_.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r, src += pixels, dst += pixels)
      for (int64_t j = 0; j < pixels; ++j) dst[j] = src[p[j]];
    return out;
  }

  torch::Tensor perm_;
  int task_;
};

std::shared_ptr<Stream> build(const PermutedOptions& o, const std::shared_ptr<const Dataset>& data, uint64_t seed) {
  return make_domain_stream("permuted", *data, o.num_tasks, [&](int t, const Stream& s) {
    std::shared_ptr<InputTransform> none;
    if (t == 0 && o.identity_first) return none;
    int64_t pixels = s.input_shape[1] * s.input_shape[2];
    at::Generator gen = make_generator(seed, {seed_purpose::permutation, static_cast<uint64_t>(t)});
    return std::shared_ptr<InputTransform>(
        std::make_shared<PixelPermutation>(torch::randperm(pixels, gen, torch::kInt64), t));
  });
}

}  // namespace

void register_permuted(StreamRegistry& registry) {
  registry.add<PermutedOptions>("permuted", "domain-IL: a fixed random pixel permutation per task", build);
}

}  // namespace clrun
