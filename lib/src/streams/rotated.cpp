// `rotated`: domain-incremental; every task is the whole data set rotated by a fixed angle.
#include <cmath>

#include <torch/nn/functional/vision.h>

#include "clrun/streams/stream.hpp"

namespace clrun {

namespace {

struct RotatedOptions {
  std::string scenario = "domain-il";
  int64_t num_tasks = 5;
  std::vector<double> angles;  ///< degrees per task; empty = t * max_angle / num_tasks
  double max_angle = 180;

  template <class V>
  void fields(V& v) {
    v("scenario", scenario, "rotated streams are domain-incremental", one_of({"domain-il"}));
    v("num_tasks", num_tasks, "number of tasks (angles)", at_least(1));
    v("angles", angles, "rotation in degrees per task; empty = evenly spaced in [0, max_angle)");
    v("max_angle", max_angle, "upper end of the evenly spaced angles", in_range(0, 360));
  }
  void validate(const ConfigNode& node) const {
    if (!angles.empty() && static_cast<int64_t>(angles.size()) != num_tasks)
      node.child("angles").fail("has " + std::to_string(angles.size()) + " angles but num_tasks is " +
                                std::to_string(num_tasks));
  }
};

class Rotation : public InputTransform {
 public:
  Rotation(double degrees, int64_t h, int64_t w) : degrees_(degrees) {
    double r = degrees * M_PI / 180.0;
    torch::Tensor theta = torch::tensor({{std::cos(r), -std::sin(r), 0.0}, {std::sin(r), std::cos(r), 0.0}},
                                        torch::kFloat32).unsqueeze(0);
    grid_ = torch::nn::functional::affine_grid(theta, {1, 1, h, w}, /*align_corners=*/false);
  }
  torch::Tensor apply(const torch::Tensor& x) const override {
    namespace F = torch::nn::functional;
    return F::grid_sample(x, grid_.expand({x.size(0), -1, -1, -1}),
                          F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(false));
  }
  void to(torch::Device device) override { grid_ = grid_.to(device); }
  nlohmann::json describe() const override { return {{"kind", "rotation"}, {"degrees", degrees_}}; }

 private:
  double degrees_;
  torch::Tensor grid_;  ///< [1, H, W, 2], computed once per task
};

std::shared_ptr<Stream> build(const RotatedOptions& o, const std::shared_ptr<const Dataset>& data, uint64_t) {
  return make_domain_stream("rotated", *data, o.num_tasks, [&](int t, const Stream& s) {
    double angle = o.angles.empty() ? t * o.max_angle / static_cast<double>(o.num_tasks) : o.angles[t];
    std::shared_ptr<InputTransform> none;
    if (angle == 0.0) return none;
    return std::shared_ptr<InputTransform>(std::make_shared<Rotation>(angle, s.input_shape[1], s.input_shape[2]));
  });
}

}  // namespace

void register_rotated(StreamRegistry& registry) {
  registry.add<RotatedOptions>("rotated", "domain-IL: the data set rotated by a fixed angle per task", build);
}

}  // namespace clrun
