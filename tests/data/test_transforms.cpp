// data/transforms: the batched image transforms (shapes, exact values, determinism under the
// seed), their config (stream.transforms) and a run with transforms that resumes identically.
#include <catch2/catch.hpp>

#include "clrun/core/seed.hpp"
#include "clrun/data/transforms.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

/// stream.transforms from flow YAML.
TransformsSpec transforms(const std::string& yaml) {
  auto source = std::make_shared<ConfigSource>();
  source->file = "t.yaml";
  return parse_transforms(ConfigNode(YAML::Load(yaml), "stream.transforms", source));
}

/// The train pipeline of `{train: [steps]}`.
TransformPipeline train(const std::string& steps) { return transforms("{train: " + steps + "}").train; }

std::string parse_error(const std::string& yaml) {
  try {
    transforms(yaml);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

/// A generator as the Trainer derives it for (seed, task, epoch, batch).
at::Generator batch_generator(uint64_t seed, uint64_t task, uint64_t epoch, uint64_t batch) {
  return make_generator(seed, {seed_purpose::train_transform, task, epoch, batch});
}

torch::Tensor images(int64_t b, int64_t c, int64_t h, int64_t w) {
  torch::manual_seed(7);
  return torch::rand({b, c, h, w});
}

}  // namespace

TEST_CASE("transforms: output shapes", "[transforms][data]") {
  torch::Tensor x = images(5, 3, 20, 10);
  at::Generator gen = batch_generator(0, 0, 0, 0);
  auto check = [&](const std::string& steps, std::vector<int64_t> shape) {
    INFO(steps);
    TransformPipeline p = train(steps);
    CHECK(p.output_shape({3, 20, 10}) == shape);
    CHECK(p.apply(x, &gen).sizes().vec() == std::vector<int64_t>{5, shape[0], shape[1], shape[2]});
  };
  check("[{resize: 16}]", {3, 32, 16});  // the shorter side (width) becomes 16, as torchvision
  check("[{resize: {size: [7, 9], interpolation: bicubic}}]", {3, 7, 9});
  check("[{resize: [5, 5]}, {center_crop: [3, 4]}]", {3, 3, 4});
  check("[{center_crop: 8}]", {3, 8, 8});
  check("[{random_resized_crop: 6}]", {3, 6, 6});
  check("[{random_resized_crop: {size: [12, 8], scale: [0.05, 1], interpolation: nearest}}]", {3, 12, 8});
  check("[{random_crop: {size: 10, padding: 4}}, {hflip: 0.5}]", {3, 10, 10});
  check("[{random_crop: [20, 10]}]", {3, 20, 10});
}

TEST_CASE("transforms: exact values of flips, crops and padded crops", "[transforms][data]") {
  torch::Tensor x = images(6, 3, 9, 8);
  at::Generator gen = batch_generator(1, 0, 0, 0);
  SECTION("hflip p = 1 is torch::flip; p = 0 is the identity; p = 0.5 flips some rows whole") {
    CHECK(torch::equal(train("[{hflip: 1}]").apply(x, nullptr), x.flip({3})));
    CHECK(torch::equal(train("[{hflip: {p: 0}}]").apply(x, nullptr), x));
    torch::Tensor y = train("[{hflip: 0.5}]").apply(images(64, 3, 9, 8), &gen);
    torch::Tensor in = images(64, 3, 9, 8);
    int flipped = 0;
    for (int64_t b = 0; b < 64; ++b) {
      const bool same = torch::equal(y[b], in[b]), mirrored = torch::equal(y[b], in[b].flip({2}));
      CHECK((same || mirrored));
      flipped += mirrored;
    }
    CHECK(flipped > 16);
    CHECK(flipped < 48);
  }
  SECTION("center crop: torchvision's offsets, values untouched") {
    CHECK(torch::equal(train("[{center_crop: 4}]").apply(x, nullptr), x.slice(2, 2, 6).slice(3, 2, 6)));
    // (9 - 4) / 2 = 2.5 rounds half to even: 2; (8 - 3) / 2 = 2.5: 2.
    CHECK(torch::equal(train("[{center_crop: [4, 3]}]").apply(x, nullptr), x.slice(2, 2, 6).slice(3, 2, 5)));
  }
  SECTION("pad + random crop: every row is a window of its zero-padded image") {
    torch::Tensor y = train("[{random_crop: {size: [9, 8], padding: 2}}]").apply(x, &gen);
    torch::Tensor padded = torch::constant_pad_nd(x, {2, 2, 2, 2}, 0);
    std::set<std::pair<int64_t, int64_t>> offsets;
    for (int64_t b = 0; b < 6; ++b) {
      bool found = false;
      for (int64_t i = 0; i <= 4 && !found; ++i)
        for (int64_t j = 0; j <= 4 && !found; ++j)
          if (torch::equal(y[b], padded[b].slice(1, i, i + 9).slice(2, j, j + 8))) found = true, offsets.insert({i, j});
      CHECK(found);
    }
    CHECK(offsets.size() > 1);  // rows get their own offsets
  }
}

TEST_CASE("transforms: random resized crop", "[transforms][data]") {
  torch::Tensor x = images(4, 3, 8, 8);
  at::Generator gen = batch_generator(2, 1, 0, 3);
  SECTION("scale [1, 1], ratio [1, 1] is a plain resize") {
    // Bicubic: the crop resamples with torch's cubic (a = -0.75), which resize uses without antialias.
    for (const std::string mode : {"bilinear", "bicubic"}) {
      INFO(mode);
      torch::Tensor crop = train("[{random_resized_crop: {size: 12, scale: [1, 1], ratio: [1, 1], interpolation: " + mode + "}}]").apply(x, &gen);
      torch::Tensor resized = train("[{resize: {size: 12, antialias: false, interpolation: " + mode + "}}]").apply(x, nullptr);
      CHECK(torch::allclose(crop, resized, /*rtol=*/0, /*atol=*/1e-5));
    }
    // Upsampling, antialias changes nothing for bilinear (the default resize).
    CHECK(torch::allclose(train("[{random_resized_crop: {size: 12, scale: [1, 1], ratio: [1, 1]}}]").apply(x, &gen),
                          train("[{resize: 12}]").apply(x, nullptr), 0, 1e-5));
  }
  SECTION("rows get their own crops, inside the image") {
    // Each row's values come from its own image: a constant image per row stays constant.
    torch::Tensor flat = torch::arange(4, torch::kFloat32).div(4).view({4, 1, 1, 1}).expand({4, 3, 8, 8}).contiguous();
    torch::Tensor y = train("[{random_resized_crop: {size: 5, scale: [0.05, 1]}}]").apply(flat, &gen);
    for (int64_t b = 0; b < 4; ++b) CHECK(torch::allclose(y[b], flat[b][0][0][0].expand({3, 5, 5}), 0, 1e-6));
    torch::Tensor z = train("[{random_resized_crop: {size: 8, scale: [0.1, 0.3]}}]").apply(x.slice(0, 0, 1).expand({4, 3, 8, 8}).contiguous(), &gen);
    CHECK_FALSE(torch::equal(z[0], z[1]));
  }
  SECTION("crops are not resized beyond what scale allows: a small scale zooms in") {
    // A horizontal ramp: a crop of at most 25% of the area spans at most ~0.6 of the width.
    torch::Tensor ramp = torch::linspace(0, 1, 64).view({1, 1, 1, 64}).expand({8, 1, 64, 64}).contiguous();
    torch::Tensor y = train("[{random_resized_crop: {size: 16, scale: [0.05, 0.25], ratio: [1, 1]}}]").apply(ramp, &gen);
    torch::Tensor span = y.amax({1, 2, 3}) - y.amin({1, 2, 3});
    CHECK(span.max().item<float>() < 0.55);
  }
}

TEST_CASE("transforms: deterministic under (seed, task, epoch, batch)", "[transforms][data]") {
  torch::Tensor x = images(8, 3, 16, 16);
  TransformPipeline p = train("[{random_resized_crop: {size: 12, scale: [0.08, 1]}}, {hflip: 0.5}, {random_crop: {size: 12, padding: 2}}]");
  auto run = [&](uint64_t seed, uint64_t task, uint64_t epoch, uint64_t batch) {
    at::Generator gen = batch_generator(seed, task, epoch, batch);
    return p.apply(x, &gen);
  };
  CHECK(torch::equal(run(5, 1, 2, 3), run(5, 1, 2, 3)));
  CHECK_FALSE(torch::equal(run(5, 1, 2, 3), run(5, 1, 2, 4)));
  CHECK_FALSE(torch::equal(run(5, 1, 2, 3), run(5, 1, 3, 3)));
  CHECK_FALSE(torch::equal(run(5, 1, 2, 3), run(6, 1, 2, 3)));
}

TEST_CASE("transforms: config errors name the key path", "[transforms][data][config]") {
  CHECK_THAT(parse_error("{test: [{hflip: 0.5}]}"), Catch::Contains("stream.transforms.test[0]") && Catch::Contains("deterministic"));
  CHECK_THAT(parse_error("{test: [{random_resized_crop: 224}]}"), Catch::Contains("deterministic"));
  CHECK(parse_error("{test: [{hflip: 1}]}").empty());  // p = 1 draws nothing
  CHECK_THAT(parse_error("{train: [{hflipp: 0.5}]}"), Catch::Contains("did you mean 'hflip'"));
  CHECK_THAT(parse_error("{train: [{hflip: 1.5}]}"), Catch::Contains("stream.transforms.train[0].hflip"));
  CHECK_THAT(parse_error("{train: [{resize: {interpolation: bicubic}}]}"), Catch::Contains("size") && Catch::Contains("required"));
  CHECK_THAT(parse_error("{train: [{resize: {size: 3, interp: bicubic}}]}"), Catch::Contains("unknown key"));
  CHECK_THAT(parse_error("{train: [{random_resized_crop: {size: 3, scale: [0.5, 0.1]}}]}"), Catch::Contains(".scale"));
  CHECK_THAT(parse_error("{train: [{resize: 3, hflip: 1}]}"), Catch::Contains("one transform"));
  CHECK_THAT(parse_error("{train: {resize: 3}}"), Catch::Contains("a list of transforms"));
  CHECK_THAT(parse_error("{tran: []}"), Catch::Contains("did you mean 'train'"));
  CHECK_THAT(parse_error("{mean: [0.5, 0.5, 0.5]}"), Catch::Contains("together"));
  CHECK_THAT(parse_error("{train: [{resize: [2, 3, 4]}]}"), Catch::Contains("[H, W]"));
}

TEST_CASE("transforms: the stream applies test transforms in prepare and train ones with a generator", "[transforms][data]") {
  test::TempDir dir("transforms_stream");
  test::write_tiny_mnist(dir.path());
  auto build = [&](const std::string& block) {
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml", {{"stream.transforms", block}});
    auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
    stream->set_image_transforms(spec.transforms);
    return std::make_pair(spec, stream);
  };
  SECTION("shapes, values and the resolved config") {
    auto [spec, stream] = build("{train: [{random_crop: {size: 10, padding: 1}}], test: [{center_crop: 10}], mean: [0.5], std: [0.25]}");
    CHECK(stream->input_shape == std::vector<int64_t>{1, 10, 10});
    const Task& task = stream->tasks[0];
    torch::Tensor raw = stream->train.images.slice(0, 0, 4);
    torch::Tensor test = stream->prepare(raw, task);
    torch::Tensor expected = (raw.to(torch::kFloat32).div(255).slice(2, 1, 11).slice(3, 1, 11) - 0.5) / 0.25;
    CHECK(torch::allclose(test, expected, 1e-5, 1e-5));
    at::Generator gen = batch_generator(3, 0, 0, 0);
    CHECK(stream->prepare(raw, task, &gen).sizes() == test.sizes());
    CHECK(spec.resolved()["stream"]["transforms"]["test"][0] == nlohmann::json{{"center_crop", {{"size", 10}}}});
    CHECK(stream->describe()["image_transforms"]["data_shape"] == nlohmann::json({1, 12, 12}));
  }
  SECTION("train and test must end in one shape") {
    CHECK_THROWS_WITH(build("{train: [{random_crop: 10}], test: [{center_crop: 8}]}"),
                      Catch::Contains("1x10x10") && Catch::Contains("1x8x8"));
  }
  SECTION("a crop larger than the images names its key") {
    CHECK_THROWS_WITH(build("{test: [{center_crop: 13}], train: [{center_crop: 13}]}"),
                      Catch::Contains("stream.transforms.train[0].center_crop") && Catch::Contains("larger"));
  }
  SECTION("no transforms: no key in the resolved config, nothing changes") {
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml");
    CHECK_FALSE(spec.resolved()["stream"].contains("transforms"));
    auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
    stream->set_image_transforms(spec.transforms);
    CHECK_FALSE(stream->has_train_transforms());
    CHECK_FALSE(stream->describe().contains("image_transforms"));
  }
}

TEST_CASE("transforms: a run with random transforms resumes identically", "[transforms][train][resume]") {
  test::TempDir dir("transforms_resume");
  std::filesystem::create_directories(dir / "data");
  test::write_tiny_mnist(dir / "data");
  const std::string block =
      "{train: [{random_resized_crop: {size: 10, scale: [0.5, 1]}}, {hflip: 0.5}, {random_crop: {size: 10, padding: 1}}], "
      "test: [{resize: {size: 10, interpolation: bicubic}}]}";
  ExperimentSpec spec = parse_spec(test::tiny_config(dir / "data"), "tiny.yaml", {{"stream.transforms", block}});
  auto [expected, resumed] = test::run_interrupted_and_resumed(spec, dir / "runs", /*task=*/1, /*step=*/3);
  CHECK(resumed["accuracy"] == expected["accuracy"]);
  CHECK(resumed["metrics"] == expected["metrics"]);
  for (int t = 0; t < 3; ++t) CHECK(resumed["per_task"][t]["mean_loss"] == expected["per_task"][t]["mean_loss"]);
  CHECK(expected["stream"]["input_shape"] == nlohmann::json({1, 10, 10}));
  // The transforms are applied: without the random ones the training losses differ.
  ExperimentSpec plain = parse_spec(test::tiny_config(dir / "data"), "tiny.yaml",
                                    {{"stream.transforms", "{test: [{resize: {size: 10, interpolation: bicubic}}], train: [{resize: {size: 10, interpolation: bicubic}}]}"}});
  RunOptions options;
  options.out_dir = dir / "plain";
  nlohmann::json other = run_experiment(plain, options).metrics;
  CHECK(other["per_task"][0]["mean_loss"] != expected["per_task"][0]["mean_loss"]);
}
