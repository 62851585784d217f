// Permuted streams permute the raw uint8 images before scaling (4x fewer bytes): the inputs must
// be bit for bit those of permuting the scaled float images, as before.
#include <catch2/catch.hpp>

#include "clrun/streams/stream.hpp"
#include "support.hpp"

using namespace clrun;

namespace {
/// The same transform, hidden behind a wrapper that does not declare moves_pixels_only(), so
/// Stream::prepare takes the float path (the one before the change).
class FloatPath : public InputTransform {
 public:
  explicit FloatPath(std::shared_ptr<InputTransform> inner) : inner_(std::move(inner)) {}
  torch::Tensor apply(const torch::Tensor& x) const override { return inner_->apply(x); }
  void to(torch::Device device) override { inner_->to(device); }
  nlohmann::json describe() const override { return inner_->describe(); }

 private:
  std::shared_ptr<InputTransform> inner_;
};
}  // namespace

TEST_CASE("permuted inputs: raw-byte permutation is bit-identical to the float path", "[streams][permuted]") {
  test::TempDir dir("permuted_inputs");
  test::write_tiny_mnist(dir.path(), 6, 3, 12);
  for (const char* normalize : {"true", "false"}) {
    INFO("normalize " << normalize);
    auto spec = parse_spec("stream: {name: permuted, num_tasks: 4}", "x.yaml",
                           {parse_override(std::string("stream.dataset={name: mnist, normalize: ") + normalize +
                                           ", root: " + dir.path() + "}")});
    std::shared_ptr<Stream> fast = spec.stream.build(spec.dataset.build(), 7);
    Stream slow = *fast;
    for (Task& t : slow.tasks)
      if (t.transform) t.transform = std::make_shared<FloatPath>(t.transform);
    REQUIRE(fast->tasks[2].transform->moves_pixels_only());
    for (int t = 0; t < fast->num_tasks(); ++t) {
      INFO("task " << t);
      for (const Split* split : {&fast->train, &fast->test}) {
        torch::Tensor rows = torch::randperm(split->size(), torch::kInt64);
        torch::Tensor a = fast->inputs(*split, rows, fast->tasks[t]);
        torch::Tensor b = slow.inputs(*split, rows, slow.tasks[t]);
        REQUIRE(a.sizes() == b.sizes());
        CHECK(torch::equal(a, b));
      }
      // Several tasks in one batch (replay memories, domain-IL joint).
      torch::Tensor rows = torch::arange(fast->test.size(), torch::kInt64);
      torch::Tensor ids = rows.remainder(fast->num_tasks());
      std::vector<int> all = {0, 1, 2, 3};
      CHECK(torch::equal(fast->inputs_by_task(fast->test, rows, ids, all), slow.inputs_by_task(slow.test, rows, ids, all)));
    }
    // A permuted task's inputs differ from the unpermuted ones (the permutation is applied).
    torch::Tensor rows = torch::arange(fast->test.size(), torch::kInt64);
    CHECK_FALSE(torch::equal(fast->inputs(fast->test, rows, fast->tasks[1]), fast->inputs(fast->test, rows, fast->tasks[0])));
  }
}
