// data/image_folder: the image-folder reader (and its imagenet-r / imagenet-a presets) on small
// folder trees of PNG and JPEG files the tests write with stb_image_write.
#include <catch2/catch.hpp>

#include <fstream>

#include <stb/stb_image_write.h>

#include "clrun/components.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

namespace fs = std::filesystem;

/// An RGB image [H, W, 3] whose pixel (y, x, c) is a function of where it is and `seed`.
std::vector<uint8_t> pattern(int h, int w, int seed) {
  std::vector<uint8_t> p(static_cast<std::size_t>(h * w * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) p[(y * w + x) * 3 + c] = static_cast<uint8_t>((seed * 37 + 50 * c + 11 * y + 3 * x) % 256);
  return p;
}

void write_png(const std::string& path, int h, int w, int channels, const std::vector<uint8_t>& pixels) {
  fs::create_directories(fs::path(path).parent_path());
  REQUIRE(stbi_write_png(path.c_str(), w, h, channels, pixels.data(), w * channels) != 0);
}

void write_jpg(const std::string& path, int h, int w, const std::vector<uint8_t>& pixels) {
  fs::create_directories(fs::path(path).parent_path());
  REQUIRE(stbi_write_jpg(path.c_str(), w, h, 3, pixels.data(), /*quality=*/100) != 0);
}

/// uint8 [3, H, W] of an [H, W, 3] pixel buffer.
torch::Tensor planar(const std::vector<uint8_t>& hwc, int h, int w) {
  return torch::from_blob(const_cast<uint8_t*>(hwc.data()), {h, w, 3}, torch::kUInt8).permute({2, 0, 1}).clone();
}

/// The data set a stream.dataset block (flow YAML, without braces) loads.
std::shared_ptr<Dataset> load(const std::string& dataset_block) {
  ExperimentSpec spec = parse_spec("stream: {name: split, increment: 1, dataset: {" + dataset_block + "}}\n", "t.yaml");
  return spec.dataset.build();
}

/// The error message loading throws (empty if none).
std::string load_error(const std::string& dataset_block) {
  try {
    load(dataset_block);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

/// root/train/{cat,dog}, root/test/{cat}: 4 x 6 images of every kind the reader converts.
struct Tree {
  test::TempDir dir{"image_folder"};
  std::string root = dir / "data";
  std::vector<uint8_t> cat_a = pattern(4, 6, 1), cat_test = pattern(4, 6, 2), dog_jpg;
  std::vector<uint8_t> grey, rgba;
  Tree() {
    write_png(root + "/train/cat/a.png", 4, 6, 3, cat_a);
    grey.resize(24);
    for (int i = 0; i < 24; ++i) grey[i] = static_cast<uint8_t>(10 * i);
    write_png(root + "/train/cat/b.png", 4, 6, 1, grey);
    dog_jpg.assign(4 * 6 * 3, 0);
    for (int i = 0; i < 24; ++i) dog_jpg[i * 3] = 200, dog_jpg[i * 3 + 1] = 100, dog_jpg[i * 3 + 2] = 30;
    write_jpg(root + "/train/dog/x.jpg", 4, 6, dog_jpg);
    rgba.resize(4 * 6 * 4);
    for (int i = 0; i < 24; ++i) rgba[i * 4] = 1, rgba[i * 4 + 1] = 2, rgba[i * 4 + 2] = 3, rgba[i * 4 + 3] = 77;
    write_png(root + "/train/dog/sub/y.png", 4, 6, 4, rgba);  // nested folders count, as in ImageFolder
    std::ofstream(root + "/train/dog/notes.txt") << "not an image";
    std::ofstream(root + "/train/dog/.hidden.png") << "skipped";
    write_png(root + "/test/cat/c.png", 4, 6, 3, cat_test);
  }
};

}  // namespace

TEST_CASE("image_folder: classes, labels, order and pixels of PNG and JPEG files", "[image_folder][data]") {
  Tree t;
  auto ds = load("name: image_folder, root: " + t.root + ", size: []");
  CHECK(ds->name == "image-folder");
  CHECK(ds->class_names == std::vector<std::string>{"cat", "dog"});
  CHECK(ds->num_classes == 2);
  REQUIRE(ds->train.images.sizes() == torch::IntArrayRef{4, 3, 4, 6});
  CHECK(ds->train.images.dtype() == torch::kUInt8);
  REQUIRE(ds->test.images.sizes() == torch::IntArrayRef{1, 3, 4, 6});
  // ImageFolder's order: class by class, folder path then file name (dog/x.jpg before dog/sub/y.png).
  CHECK(torch::equal(ds->train.labels, torch::tensor({0, 0, 1, 1}, torch::kInt64)));
  CHECK(torch::equal(ds->test.labels, torch::tensor({0}, torch::kInt64)));
  // PNG: exact; grey becomes R = G = B; RGBA loses its alpha.
  CHECK(torch::equal(ds->train.images[0], planar(t.cat_a, 4, 6)));
  torch::Tensor grey = torch::tensor(std::vector<int64_t>(t.grey.begin(), t.grey.end())).view({1, 4, 6}).to(torch::kUInt8);
  CHECK(torch::equal(ds->train.images[1], grey.expand({3, 4, 6})));
  CHECK(torch::equal(ds->train.images[3], torch::tensor({1, 2, 3}, torch::kUInt8).view({3, 1, 1}).expand({3, 4, 6})));
  CHECK(torch::equal(ds->test.images[0], planar(t.cat_test, 4, 6)));
  // JPEG (quality 100, one colour): within a few levels.
  torch::Tensor diff = (ds->train.images[2].to(torch::kInt32) - planar(t.dog_jpg, 4, 6).to(torch::kInt32)).abs();
  CHECK(diff.max().item<int>() <= 3);
  // ImageNet's statistics by default.
  CHECK(ds->mean == std::vector<double>{0.485, 0.456, 0.406});
  CHECK(load("name: image_folder, root: " + t.root + ", normalize: false")->std == std::vector<double>{1.0});
}

TEST_CASE("image_folder: resizing on load (cover + center crop, stretch) and mixed sizes", "[image_folder][data]") {
  test::TempDir dir("image_folder_resize");
  const std::string root = dir / "data";
  // 4 x 8: the left half red, the right half blue; a 6 x 6 grey one of another size.
  std::vector<uint8_t> halves(4 * 8 * 3, 0);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 8; ++x) halves[(y * 8 + x) * 3 + (x < 4 ? 0 : 2)] = 255;
  write_png(root + "/train/a/halves.png", 4, 8, 3, halves);
  write_png(root + "/train/b/grey.png", 6, 6, 3, std::vector<uint8_t>(6 * 6 * 3, 90));
  write_png(root + "/test/a/halves.png", 4, 8, 3, halves);

  SECTION("mixed sizes need size") {
    const std::string error = load_error("name: image_folder, root: " + root);
    CHECK_THAT(error, Catch::Contains("grey.png") && Catch::Contains("size: [H, W]"));
  }
  SECTION("cover: the shorter side fits, the center is cropped (no resampling needed here: exact)") {
    auto ds = load("name: image_folder, root: " + root + ", size: [4, 4]");
    REQUIRE(ds->train.images.sizes() == torch::IntArrayRef{2, 3, 4, 4});
    torch::Tensor img = ds->train.images[0];
    CHECK(torch::equal(img.slice(2, 0, 2), planar(halves, 4, 8).slice(2, 2, 4)));
    CHECK(torch::equal(img.slice(2, 2, 4), planar(halves, 4, 8).slice(2, 4, 6)));
    // A one-colour image stays that colour through any resize.
    CHECK(torch::equal(ds->train.images[1], torch::full({3, 4, 4}, 90, torch::kUInt8)));
  }
  SECTION("stretch: the whole image squeezed into the size") {
    auto ds = load("name: image_folder, root: " + root + ", size: [2, 4], load_resize: stretch");
    REQUIRE(ds->train.images.sizes() == torch::IntArrayRef{2, 3, 2, 4});
    torch::Tensor img = ds->train.images[0].to(torch::kInt32);
    CHECK(img[0][0][0].item<int>() >= 250);  // left: red
    CHECK(img[2][0][0].item<int>() <= 5);
    CHECK(img[2][0][3].item<int>() >= 250);  // right: blue
    CHECK(img[0][0][3].item<int>() <= 5);
  }
}

TEST_CASE("image_folder: errors name the file or folder", "[image_folder][data]") {
  Tree t;
  const std::string base = "name: image_folder, root: " + t.root;
  SECTION("a corrupt file") {
    std::ofstream(t.root + "/train/dog/broken.png", std::ios::binary) << "\x89PNG\r\n\x1a\n garbage";
    CHECK_THAT(load_error(base), Catch::Contains("broken.png") && Catch::Contains("cannot decode"));
  }
  SECTION("an empty file") {
    std::ofstream(t.root + "/train/dog/empty.jpg");
    CHECK_THAT(load_error(base), Catch::Contains("empty.jpg") && Catch::Contains("empty file"));
  }
  SECTION("a missing split") {
    fs::remove_all(t.root + "/test");
    CHECK_THAT(load_error(base), Catch::Contains(t.root + "/test") && Catch::Contains("not found"));
  }
  SECTION("test classes that train lacks") {
    write_png(t.root + "/test/bird/z.png", 4, 6, 3, t.cat_a);
    CHECK_THAT(load_error(base), Catch::Contains("bird") && Catch::Contains("subset"));
  }
  SECTION("a class folder without images") {
    fs::create_directories(t.root + "/train/emu");
    CHECK_THAT(load_error(base), Catch::Contains("emu") && Catch::Contains("no .jpg"));
  }
  SECTION("a missing root names the path and where the data comes from") {
    CHECK_THAT(load_error("name: image_folder, root: " + t.root + "/nowhere"),
               Catch::Contains(t.root + "/nowhere") && Catch::Contains("nothing is downloaded"));
    const std::string preset = load_error("name: imagenet_r, root: " + t.root + "/nowhere");
    CHECK_THAT(preset, Catch::Contains(t.root + "/nowhere") && Catch::Contains("PILOT") &&
                           Catch::Contains("train/<wnid>") && Catch::Contains("hint:"));
  }
  SECTION("a root one level up is pointed at the data's own folder") {
    test::TempDir up("image_folder_up");
    fs::create_directories(up / "imagenet-a/train");
    CHECK_THAT(load_error("name: imagenet-a, root: " + up.path()), Catch::Contains(up / "imagenet-a"));
  }
  SECTION("presets check their class count") {
    CHECK_THAT(load_error("name: imagenet-r, root: " + t.root), Catch::Contains("2 class folders") && Catch::Contains("200"));
  }
  SECTION("size must be [H, W]") {
    CHECK_THAT(load_error(base + ", size: [4]"), Catch::Contains("stream.dataset.size"));
  }
}

TEST_CASE("image_folder: a stream over the data set and its presets' defaults", "[image_folder][data]") {
  Tree t;
  ExperimentSpec spec = parse_spec("stream: {name: split, increment: 1, dataset: {name: image_folder, root: " + t.root + "}}\n", "t.yaml");
  auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
  CHECK(stream->num_tasks() == 2);
  CHECK(stream->input_shape == std::vector<int64_t>{3, 4, 6});
  // imagenet-r / imagenet-a: PILOT's 256 load size and [0, 1] inputs.
  ExperimentSpec r = parse_spec("stream: {dataset: imagenet-r}\n", "t.yaml");
  CHECK(r.dataset.resolved.at("size") == nlohmann::json({256, 256}));
  CHECK(r.dataset.resolved.at("normalize") == false);
  CHECK(r.dataset.resolved.at("root") == "data/imagenet-r");
  CHECK(registries().datasets.contains("imagenet_a"));
}

TEST_CASE("image_folder cache: disk: decoded once into a mapped file, the same pixels and batches", "[image_folder][data][cache]") {
  Tree t;
  test::TempDir cache("image_cache");
  const char* old = std::getenv("CLRUN_DATA_CACHE_DIR");
  const std::string saved = old ? old : "";
  ::setenv("CLRUN_DATA_CACHE_DIR", cache.path().c_str(), 1);
  ::unsetenv("CLRUN_DATA_CACHE");  // tests/main.cpp turns the user's cache off; this one is the test's
  auto entries = [&] {
    std::vector<std::string> out;
    if (fs::exists(cache / "images"))
      for (const auto& e : fs::directory_iterator(cache / "images")) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
  };
  const std::string block = "name: image_folder, root: " + t.root + ", size: [5, 5]";
  auto memory = load(block);
  CHECK(entries().empty());  // cache: memory writes nothing
  auto disk = load(block + ", cache: disk");
  CHECK(disk->host_images);
  CHECK_FALSE(memory->host_images);
  CHECK(torch::equal(disk->train.images, memory->train.images));
  CHECK(torch::equal(disk->test.images, memory->test.images));
  const auto written = entries();
  REQUIRE(written.size() == 2);  // train and test, complete (no temp file left)
  CHECK(fs::file_size(written[0]) == 4096 + 1 * 3 * 5 * 5);  // test sorts first: 1 image
  const auto stamp = fs::last_write_time(written[1]);

  // A second load maps the same entries; a changed image makes a new entry for its split.
  auto again = load(block + ", cache: disk");
  CHECK(torch::equal(again->train.images, memory->train.images));
  CHECK(entries() == written);
  CHECK(fs::last_write_time(written[1]) == stamp);
  fs::last_write_time(t.root + "/train/cat/a.png", fs::last_write_time(t.root + "/train/cat/a.png") + std::chrono::seconds(5));
  load(block + ", cache: disk");
  CHECK(entries().size() == 3);

  // Batches: gathered on the host, normalised like the in-memory data.
  ExperimentSpec spec = parse_spec("stream: {name: split, increment: 1, dataset: {" + block + "}}\n", "t.yaml");
  auto from_memory = spec.stream.build(memory, spec.seed), from_disk = spec.stream.build(disk, spec.seed);
  from_memory->to(torch::kCPU);
  from_disk->to(torch::kCPU);
  const torch::Tensor rows = torch::tensor({2, 0, 3}, torch::kInt64);
  Batch a = from_memory->make_batch(from_memory->train, rows, {}, {0}), b = from_disk->make_batch(from_disk->train, rows, {}, {0});
  CHECK(torch::equal(a.inputs, b.inputs));
  CHECK(torch::equal(a.targets, b.targets));

  // A corrupt entry is not used, and rewritten (only once nothing maps it: clrun never truncates an
  // entry, it writes a new file and renames it).
  disk.reset(), again.reset(), from_disk.reset();
  for (const auto& e : entries()) fs::resize_file(e, 100);
  CHECK(torch::equal(load(block + ", cache: disk")->train.images, memory->train.images));

  ::setenv("CLRUN_DATA_CACHE", "off", 1);
  CHECK_THAT(load_error(block + ", cache: disk"), Catch::Contains("stream.dataset.cache") && Catch::Contains("CLRUN_DATA_CACHE_DIR"));
  if (old) ::setenv("CLRUN_DATA_CACHE_DIR", saved.c_str(), 1);
  else ::unsetenv("CLRUN_DATA_CACHE_DIR");
}
