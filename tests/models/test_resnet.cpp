// models/resnet: the four variants' shapes, names (against state_dicts captured from torchvision and
// PyCIL), initialisation, BatchNorm modes, training, and numeric parity with torchvision / PyCIL on
// the fixtures of scripts/make_resnet_fixtures.py: resnet_<case>_state_dict.txt (the reference's
// tensor names, dtypes and shapes) and resnet_<case>_io.safetensors (input, features, logits). The
// reference weights are a formula of each tensor's index and shape, rebuilt here (see the script).
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include <spdlog/spdlog.h>

#include "clrun/config/spec.hpp"
#include "clrun/io/safetensors.hpp"
#include "clrun/models/model.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

std::shared_ptr<Backbone> resnet(const std::string& options, std::vector<int64_t> shape) {
  return parse_spec("backbone: {name: resnet, " + options + "}", "x.yaml").backbone.build(shape);
}

std::string fixture_dir() {
  std::string here = __FILE__;
  return here.substr(0, here.find_last_of('/')) + "/fixtures/";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_buffer(const std::string& name) {
  return ends_with(name, ".running_mean") || ends_with(name, ".running_var") || ends_with(name, ".num_batches_tracked");
}

/// One line of a resnet_<case>_state_dict.txt fixture.
struct StateEntry {
  std::string name, dtype;
  std::vector<int64_t> shape;
};

/// The reference's state_dict, in its order; `fc.*` (torchvision's and PyCIL's classifier) included.
std::vector<StateEntry> read_state_dict(const std::string& case_name) {
  const std::string path = fixture_dir() + "resnet_" + case_name + "_state_dict.txt";
  std::ifstream in(path);
  REQUIRE(in.good());
  std::vector<StateEntry> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    StateEntry e;
    std::string shape;
    fields >> e.name >> e.dtype >> shape;
    std::istringstream dims(shape);
    for (std::string d; shape != "-" && std::getline(dims, d, 'x');) e.shape.push_back(std::stoll(d));
    out.push_back(e);
  }
  return out;
}

/// The fixtures' weights: tensor number `k` of the state_dict, exactly as make_resnet_fixtures.py
/// computes it (integer hash, then the same float64 operations, then float32).
torch::Tensor make_weight(int64_t k, const std::string& name, const std::vector<int64_t>& shape) {
  if (ends_with(name, "num_batches_tracked")) return torch::zeros(shape, torch::kInt64);
  const int64_t P = 65521;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  torch::Tensor j = torch::arange(n, torch::kInt64).remainder(P);
  torch::Tensor h = (j * j * 31 + j * 7919 + k * 104729 + 12345).remainder(P);
  torch::Tensor u = h.to(torch::kFloat64) / static_cast<double>(P);
  torch::Tensor z = (u - 0.5) * std::sqrt(12.0);
  torch::Tensor v;
  if (ends_with(name, "running_var")) v = 0.5 + u;
  else if (ends_with(name, "running_mean")) v = 0.3 * z;
  else if (shape.size() >= 2) v = z * (1.0 / std::sqrt(static_cast<double>(n / shape[0])));
  else if (ends_with(name, ".weight")) v = 1.0 + 0.3 * z;
  else v = 0.3 * z;
  return v.to(torch::kFloat32).reshape(shape);
}

/// A reference model of the parity fixtures and the clrun options that build it.
struct Reference {
  std::string name;     ///< fixture case
  std::string options;  ///< resnet options
  std::vector<int64_t> shape;
};

const std::vector<Reference>& references() {
  static const std::vector<Reference> refs = {
      {"resnet18", "variant: resnet18", {3, 64, 64}},
      {"resnet50", "variant: resnet50", {3, 64, 64}},
      {"resnet18_cifar_gray", "variant: resnet18_cifar", {1, 28, 28}},
      {"resnet32_cifar", "variant: resnet32_cifar", {3, 32, 32}},
  };
  return refs;
}

torch::Tensor cross_entropy_step(Classifier& model, torch::optim::Optimizer& opt, const torch::Tensor& x,
                                 const torch::Tensor& y) {
  opt.zero_grad();
  torch::Tensor loss = torch::nn::functional::cross_entropy(model.logits(x), y);
  loss.backward();
  opt.step();
  return loss.detach();
}

std::vector<std::shared_ptr<torch::nn::BatchNorm2dImpl>> batch_norms(torch::nn::Module& m) {
  std::vector<std::shared_ptr<torch::nn::BatchNorm2dImpl>> out;
  for (const auto& child : m.modules(/*include_self=*/false))
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(child)) out.push_back(bn);
  return out;
}

}  // namespace

TEST_CASE("resnet variants: feature sizes, output shapes and parameter counts", "[models][resnet]") {
  struct Case {
    std::string options;
    std::vector<int64_t> shape;
    int64_t feature_dim, parameters;  ///< parameters: -1 = not checked
  };
  const std::vector<Case> cases = {
      // torchvision's counts without fc: 11,689,512 - 513,000 and 25,557,032 - 2,049,000
      {"variant: resnet18", {3, 32, 32}, 512, 11176512},
      {"variant: resnet50", {3, 32, 32}, 2048, 23508032},
      {"variant: resnet18", {1, 8, 8}, 512, -1},  // tiny inputs shrink to 1x1 and stay there
      {"variant: resnet18_cifar", {3, 32, 32}, 512, 11168832},  // torchvision's minus the 7x7 stem plus a 3x3 one
      {"variant: resnet18_cifar, width: 8", {1, 12, 12}, 64, -1},
      {"variant: resnet18_cifar, width: 4", {3, 4, 4}, 32, -1},
      {"variant: resnet32_cifar", {3, 32, 32}, 64, 463504},  // PyCIL's resnet32 without fc
      {"variant: resnet32_cifar, width: 4", {1, 28, 28}, 16, -1},
      {"variant: resnet32_cifar", {3, 5, 7}, 64, -1},
  };
  for (const Case& c : cases) {
    INFO(c.options << " on " << c10::IntArrayRef(c.shape));
    auto b = resnet(c.options, c.shape);
    CHECK(b->feature_dim() == c.feature_dim);
    if (c.parameters >= 0) CHECK(count_parameters(*b) == c.parameters);
    b->eval();
    torch::NoGradGuard no_grad;
    std::vector<int64_t> batch_shape = {2};
    batch_shape.insert(batch_shape.end(), c.shape.begin(), c.shape.end());
    torch::Tensor f = b->forward(torch::randn(batch_shape));
    CHECK(f.sizes() == std::vector<int64_t>({2, c.feature_dim}));
    CHECK(f.isfinite().all().item<bool>());
  }
  CHECK_THROWS_WITH(resnet("variant: resnet50, width: 32", {3, 32, 32}),
                    Catch::Contains("backbone.width: applies to resnet18_cifar and resnet32_cifar; resnet50 has "
                                    "torchvision's fixed widths"));
  CHECK_THROWS_WITH(resnet("variant: resnet34", {3, 32, 32}), Catch::Contains("backbone.variant"));
  CHECK_THROWS_WITH(resnet("bn: eval", {3, 32, 32}), Catch::Contains("backbone.bn"));
}

TEST_CASE("resnet has the state_dict names of torchvision and PyCIL", "[models][resnet]") {
  for (const Reference& ref : references()) {
    SECTION(ref.name) {
      // fc.* is the reference's classifier: the Classifier's head here
      std::vector<std::string> want_params, want_buffers;
      std::map<std::string, std::vector<int64_t>> want_shapes;
      for (const StateEntry& e : read_state_dict(ref.name)) {
        if (e.name.rfind("fc.", 0) == 0) continue;
        (is_buffer(e.name) ? want_buffers : want_params).push_back(e.name);
        want_shapes[e.name] = e.shape;
        CHECK(e.dtype == (ends_with(e.name, "num_batches_tracked") ? "I64" : "F32"));
      }
      auto b = resnet(ref.options, ref.shape);
      std::vector<std::string> params, buffers;
      std::map<std::string, std::vector<int64_t>> shapes;
      for (const auto& p : b->named_parameters()) params.push_back(p.key()), shapes[p.key()] = p.value().sizes().vec();
      for (const auto& p : b->named_buffers()) buffers.push_back(p.key()), shapes[p.key()] = p.value().sizes().vec();
      CHECK(params == want_params);  // same names in the same order
      CHECK(buffers == want_buffers);
      CHECK(shapes == want_shapes);
      for (const auto& buffer : b->named_buffers()) {
        const bool counter = ends_with(buffer.key(), "num_batches_tracked");
        CHECK(buffer.value().scalar_type() == (counter ? torch::kInt64 : torch::kFloat32));
      }
    }
  }
}

TEST_CASE("resnet init follows torchvision, its convs are tapped", "[models][resnet]") {
  torch::manual_seed(0);
  auto b = resnet("variant: resnet18", {3, 32, 32});
  auto params = b->named_parameters();
  // kaiming-normal, fan_out, relu: std sqrt(2 / (out_channels * k * k))
  CHECK(params["layer4.1.conv2.weight"].std().item<double>() == Approx(std::sqrt(2.0 / (512 * 9))).epsilon(0.02));
  CHECK(params["conv1.weight"].std().item<double>() == Approx(std::sqrt(2.0 / (64 * 49))).epsilon(0.05));
  CHECK(params["layer2.0.downsample.0.weight"].std().item<double>() == Approx(std::sqrt(2.0 / 128)).epsilon(0.05));
  CHECK(params["layer1.0.bn2.weight"].eq(1).all().item<bool>());
  CHECK(params["layer1.0.bn2.bias"].eq(0).all().item<bool>());
  CHECK(nn::tapped_layers(*b).size() == 1 + 8 * 2 + 3);  // stem, two convs per block, three downsamples
  CHECK(nn::tapped_layers(*resnet("variant: resnet50", {3, 32, 32})).size() == 1 + 16 * 3 + 4);
  CHECK(nn::tapped_layers(*resnet("variant: resnet32_cifar", {3, 32, 32})).size() == 1 + 15 * 2);

  // zero_init_residual zeroes the BatchNorm that ends each residual branch, and only that one
  auto zero18 = resnet("variant: resnet18_cifar, width: 4, zero_init_residual: true", {3, 8, 8})->named_parameters();
  CHECK(zero18["layer3.1.bn2.weight"].eq(0).all().item<bool>());
  CHECK(zero18["layer3.1.bn1.weight"].eq(1).all().item<bool>());
  CHECK(zero18["layer3.0.downsample.1.weight"].eq(1).all().item<bool>());
  auto zero50 = resnet("variant: resnet50, zero_init_residual: true", {3, 32, 32})->named_parameters();
  CHECK(zero50["layer2.3.bn3.weight"].eq(0).all().item<bool>());
  CHECK(zero50["layer2.3.bn2.weight"].eq(1).all().item<bool>());
  auto zero32 = resnet("variant: resnet32_cifar, zero_init_residual: true", {3, 32, 32})->named_parameters();
  CHECK(zero32["stage_2.4.bn_b.weight"].eq(0).all().item<bool>());
  CHECK(zero32["stage_2.4.bn_a.weight"].eq(1).all().item<bool>());
  // with zero residual branches every block is its shortcut: resnet32's zero-padded shortcut
  // then leaves the channels it appends at zero, before and after the final ReLU
  auto ident = resnet("variant: resnet32_cifar, width: 4, zero_init_residual: true", {3, 8, 8});
  ident->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor f = ident->forward(torch::randn({3, 3, 8, 8}));
  CHECK(f.narrow(1, 4, 12).abs().max().item<double>() == 0.0);
  CHECK(f.narrow(1, 0, 4).abs().max().item<double>() > 0.0);
}

TEST_CASE("resnet bn: train updates the running statistics, frozen never does", "[models][resnet]") {
  torch::manual_seed(2);
  torch::Tensor x = torch::randn({8, 3, 8, 8}) * 2 + 1, y = torch::randint(0, 3, {8});
  for (const std::string bn : {"train", "frozen"}) {
    SECTION(bn) {
      Classifier model(resnet("variant: resnet18_cifar, width: 4, bn: " + bn, {3, 8, 8}), 3);
      model.eval();
      model.train();  // the Trainer's order; frozen BatchNorm must survive it
      std::map<std::string, torch::Tensor> buffers, params;
      for (const auto& b : model.named_buffers()) buffers[b.key()] = b.value().clone();
      for (const auto& p : model.named_parameters()) params[p.key()] = p.value().detach().clone();
      torch::optim::SGD opt(model.parameters(), torch::optim::SGDOptions(0.1));
      cross_entropy_step(model, opt, x, y);
      auto after = model.named_buffers();
      auto bn_weight = model.named_parameters()["backbone.layer2.0.bn1.weight"];
      auto bns = batch_norms(model);
      CHECK(bns.size() == 1 + 8 * 2 + 3);
      CHECK(model.backbone->is_training());
      // the affine parameters train either way
      CHECK_FALSE(torch::equal(bn_weight, params["backbone.layer2.0.bn1.weight"]));
      if (bn == "train") {
        for (const auto& m : bns) CHECK(m->is_training());
        CHECK_FALSE(torch::equal(after["backbone.bn1.running_mean"], buffers["backbone.bn1.running_mean"]));
        const std::string var = "backbone.layer4.1.bn2.running_var";
        CHECK_FALSE(torch::equal(after[var], buffers[var]));
        CHECK(after["backbone.bn1.num_batches_tracked"].item<int64_t>() == 1);
      } else {
        for (const auto& m : bns) CHECK_FALSE(m->is_training());
        for (const auto& [name, before] : buffers) {
          INFO(name);
          CHECK(torch::equal(after[name], before));
        }
        // the backbone is one function in training and evaluation
        torch::NoGradGuard no_grad;
        torch::Tensor training = model.features(x);
        model.eval();
        CHECK(torch::equal(model.features(x), training));
      }
    }
  }
}

TEST_CASE("resnet in eval mode normalises with the running statistics", "[models][resnet]") {
  torch::manual_seed(4);
  auto b = resnet("variant: resnet32_cifar, width: 4", {3, 8, 8});
  torch::Tensor x = torch::randn({4, 3, 8, 8});
  torch::NoGradGuard no_grad;
  auto stem_mean = b->named_buffers()["bn_1.running_mean"];
  b->eval();
  torch::Tensor f = b->forward(x);
  // each row alone gives its features in the batch (no batch statistics)
  CHECK(torch::allclose(b->forward(x.narrow(0, 2, 1)), f.narrow(0, 2, 1), 1e-5, 1e-6));
  stem_mean.add_(1.0);
  CHECK_FALSE(torch::allclose(b->forward(x), f));  // the running statistics are read ...
  b->train();
  torch::Tensor t = b->forward(x);
  stem_mean.add_(1.0);
  CHECK(torch::allclose(b->forward(x), t));  // ... and in training the batch's are used instead
  CHECK_FALSE(torch::allclose(b->forward(x.narrow(0, 0, 2)), t.narrow(0, 0, 2)));
}

TEST_CASE("a resnet18_cifar classifier learns", "[models][resnet]") {
  torch::manual_seed(5);
  // four classes: a bright quadrant per class, plus noise
  torch::Tensor y = torch::arange(32).remainder(4);
  torch::Tensor x = torch::randn({32, 3, 16, 16}) * 0.5;
  for (int64_t i = 0; i < 32; ++i) {
    const int64_t c = y[i].item<int64_t>();
    x[i].narrow(1, (c / 2) * 8, 8).narrow(2, (c % 2) * 8, 8).add_(2.0);
  }
  Classifier model(resnet("variant: resnet18_cifar, width: 8", {3, 16, 16}), 4);
  model.train();
  torch::optim::SGD opt(model.parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  const double first = cross_entropy_step(model, opt, x, y).item<double>();
  double last = first;
  for (int step = 0; step < 15; ++step) last = cross_entropy_step(model, opt, x, y).item<double>();
  INFO("loss " << first << " -> " << last);
  CHECK(last < 0.5 * first);
  model.eval();
  torch::NoGradGuard no_grad;
  CHECK(model.logits(x).argmax(1).eq(y).to(torch::kFloat32).mean().item<double>() >= 0.9);
}

TEST_CASE("resnet trains in a run on 1-channel images and resumes mid-task", "[models][resnet][run]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("resnet_run");
  test::write_tiny_mnist(dir.path());
  ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                   {parse_override("backbone={name: resnet, variant: resnet18_cifar, width: 8}"),
                                    parse_override("train.epochs=3"), parse_override("stream.num_tasks=1"),
                                    parse_override("train.optimizer={name: adam, lr: 0.003}")});
  RunOptions options;
  options.out_dir = dir / "run";
  nlohmann::json m = run_experiment(spec, options).metrics;
  CHECK(m["accuracy"]["matrix"][0][0].get<double>() >= 90.0);

  // the BatchNorm statistics are restored from the checkpoint with the parameters
  ExperimentSpec two = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                  {parse_override("backbone={name: resnet, variant: resnet32_cifar, width: 4}"),
                                   parse_override("train.epochs=1"), parse_override("stream.num_tasks=2")});
  auto [expected, resumed] = test::run_interrupted_and_resumed(two, dir / "resume", /*task=*/1, /*step=*/2);
  CHECK(resumed["accuracy"] == expected["accuracy"]);
  CHECK(resumed["per_task"][1]["mean_loss"] == expected["per_task"][1]["mean_loss"]);
}

TEST_CASE("resnet matches torchvision's ResNet and PyCIL's resnet32 numerically", "[models][resnet][parity]") {
  spdlog::set_level(spdlog::level::warn);
  test::TempDir dir("resnet_parity");
  for (const Reference& ref : references()) {
    SECTION(ref.name) {
      // the reference's weights under its own names (fc.* included), loaded through backbone.init
      std::vector<std::pair<std::string, torch::Tensor>> tensors;
      const std::vector<StateEntry> entries = read_state_dict(ref.name);
      for (std::size_t k = 0; k < entries.size(); ++k) {
        const std::string& name = entries[k].name;
        tensors.emplace_back(name, make_weight(static_cast<int64_t>(k), name, entries[k].shape));
      }
      const std::string weights = dir / (ref.name + ".safetensors");
      write_safetensors(weights, tensors);
      ExperimentSpec spec = parse_spec("backbone: {name: resnet, " + ref.options + ", init: {safetensors: " + weights +
                                           ", strict: true}}",
                                       "x.yaml");
      auto model = std::make_shared<Classifier>(spec.backbone.build(ref.shape), 5);
      initialize(*model, spec.backbone_common.init);
      // BatchNorm statistics are loaded with the parameters
      auto buffers = model->named_buffers();
      for (const auto& [name, t] : tensors) {
        INFO(name);
        if (ends_with(name, "running_var") || ends_with(name, "running_mean"))
          REQUIRE(torch::equal(buffers["backbone." + name], t));
        if (name == "fc.weight") REQUIRE(torch::equal(model->head->weight, t));  // the head too
      }

      model->eval();
      torch::NoGradGuard no_grad;
      SafetensorsFile io(fixture_dir() + "resnet_" + ref.name + "_io.safetensors");
      torch::Tensor x = io.get("__input");
      torch::Tensor features = model->features(x), logits = model->logits(x);
      torch::Tensor want_features = io.get("__features"), want_logits = io.get("__logits");
      REQUIRE(features.sizes() == want_features.sizes());
      REQUIRE(logits.sizes() == want_logits.sizes());
      const double df = (features - want_features).abs().max().item<double>();
      const double dl = (logits - want_logits).abs().max().item<double>();
      INFO(ref.name << ": max |features - reference| = " << df << ", max |logits - reference| = " << dl);
      CHECK(df < 1e-4);
      CHECK(dl < 1e-4);
      // O(1) outputs: a mistake cannot hide under the tolerance
      CHECK(want_features.std().item<double>() > 0.3);
      CHECK(want_logits.std().item<double>() > 0.3);
    }
  }
}
