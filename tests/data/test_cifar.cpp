// data/cifar: the CIFAR-10/100 binary-version readers, on tiny fake data set directories the tests
// write (a few records per batch file, each pixel's value a function of where it belongs).
#include <catch2/catch.hpp>

#include "clrun/components.hpp"
#include "clrun/core/text.hpp"
#include "clrun/data/cifar.hpp"
#include "clrun/io/atomic.hpp"
#include "support.hpp"

using namespace clrun;

namespace {

/// The value of pixel (channel c, row y, column x) of the data set's i-th record.
uint8_t pixel(int64_t i, int64_t c, int64_t y, int64_t x) { return static_cast<uint8_t>((7 * i + 100 * c + 3 * y + x) % 251); }

/// Records `first`..`first + labels.size() - 1`, each its label bytes then the pixels in the
/// binary version's order (1024 R, 1024 G, 1024 B, each plane row-major).
std::string records(int64_t first, const std::vector<std::vector<uint8_t>>& labels) {
  std::string out;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    for (uint8_t l : labels[r]) out.push_back(static_cast<char>(l));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x) out.push_back(static_cast<char>(pixel(first + int64_t(r), c, y, x)));
  }
  return out;
}

/// The images records `first`..`first + n - 1` must load as, built pixel by pixel.
torch::Tensor expected_images(int64_t first, int64_t n) {
  torch::Tensor t = torch::empty({n, 3, 32, 32}, torch::kUInt8);
  auto a = t.accessor<uint8_t, 4>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x) a[i][c][y][x] = pixel(first + i, c, y, x);
  return t;
}

/// cifar-10-batches-bin with 3 records per file; record i (counted over the train files, then
/// the test file) has label i % 10.
void write_fake_cifar10(const std::string& dir) {
  for (int b = 0; b < 5; ++b)
    write_file_atomic(dir + "/data_batch_" + std::to_string(b + 1) + ".bin",
                      records(3 * b, {{uint8_t((3 * b) % 10)}, {uint8_t((3 * b + 1) % 10)}, {uint8_t((3 * b + 2) % 10)}}));
  write_file_atomic(dir + "/test_batch.bin", records(15, {{5}, {6}, {7}}));
}

/// cifar-100-binary with `n` train and `n` test records; record i has coarse label i % 20 and
/// fine label i % 100 (test records continue the count at n).
void write_fake_cifar100(const std::string& dir, int64_t n = 4) {
  auto labels = [](int64_t first, int64_t count) {
    std::vector<std::vector<uint8_t>> out;
    for (int64_t i = first; i < first + count; ++i) out.push_back({uint8_t(i % 20), uint8_t(i % 100)});
    return out;
  };
  write_file_atomic(dir + "/train.bin", records(0, labels(0, n)));
  write_file_atomic(dir + "/test.bin", records(n, labels(n, n)));
}

std::shared_ptr<Dataset> load(const std::string& dataset_block) {
  return parse_spec("stream: {dataset: " + dataset_block + "}", "x.yaml").dataset.build();
}

std::string load_error(const std::string& dataset_block) {
  try {
    load(dataset_block);
  } catch (const InputError& e) {
    // as the CLI prints it: one line plus at most a hint line
    CHECK(one_line_error(e.what()) == e.what());
    return e.what();
  }
  return "";
}

std::vector<int64_t> labels_of(const Split& s) {
  torch::Tensor l = s.labels.contiguous();
  return {l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel()};
}

}  // namespace

TEST_CASE("cifar10 loads the five train batches and the test batch, pixels in place", "[data][cifar]") {
  test::TempDir dir("cifar10");
  write_fake_cifar10(dir.path());
  auto ds = load("{name: cifar10, root: " + dir.path() + "}");
  CHECK(ds->name == "cifar10");
  CHECK(ds->train.images.sizes() == std::vector<int64_t>{15, 3, 32, 32});
  CHECK(ds->test.images.sizes() == std::vector<int64_t>{3, 3, 32, 32});
  CHECK(ds->train.images.dtype() == torch::kUInt8);
  CHECK(ds->train.labels.dtype() == torch::kInt64);
  CHECK(ds->input_shape() == std::vector<int64_t>{3, 32, 32});
  // channel planes R, G, B, each row-major; the batches in file order
  CHECK(ds->train.images.equal(expected_images(0, 15)));
  CHECK(ds->test.images.equal(expected_images(15, 3)));
  CHECK(ds->train.images[4][1][2][5].item<int>() == (7 * 4 + 100 + 3 * 2 + 5));
  CHECK(labels_of(ds->train) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4});
  CHECK(labels_of(ds->test) == std::vector<int64_t>{5, 6, 7});
  // no batches.meta.txt: the standard names
  CHECK(ds->num_classes == 10);
  CHECK(ds->class_names.front() == "airplane");
  CHECK(ds->class_names.back() == "truck");
  CHECK(ds->mean == std::vector<double>{0.4914, 0.4822, 0.4465});
  CHECK(ds->std == std::vector<double>{0.2470, 0.2435, 0.2616});

  auto raw = load("{name: cifar10, root: " + dir.path() + ", normalize: false}");
  CHECK(raw->mean == std::vector<double>{0.0});
  CHECK(raw->std == std::vector<double>{1.0});
}

TEST_CASE("cifar10 takes its class names from batches.meta.txt", "[data][cifar]") {
  test::TempDir dir("cifar10_meta");
  write_fake_cifar10(dir.path());
  // as the official file: one name per line and trailing blank lines; here also CRLF and spaces
  write_file_atomic(dir / "batches.meta.txt", "a0\r\n a1\nb 2\nc3\nd4\ne5\nf6\ng7\nh8\ni9 \n\n\n");
  auto ds = load("{name: cifar10, root: " + dir.path() + "}");
  CHECK(ds->class_names == std::vector<std::string>{"a0", "a1", "b 2", "c3", "d4", "e5", "f6", "g7", "h8", "i9"});
  write_file_atomic(dir / "batches.meta.txt", "a\nb\nc\n");
  CHECK(load_error("{name: cifar10, root: " + dir.path() + "}") ==
        dir / "batches.meta.txt" + ": 3 class names, expected 10 (one per line)");
}

TEST_CASE("cifar100: fine labels by default, coarse on request, names from the names files", "[data][cifar]") {
  test::TempDir dir("cifar100");
  write_fake_cifar100(dir.path(), 25);
  auto fine = load("{name: cifar100, root: " + dir.path() + "}");
  CHECK(fine->train.images.sizes() == std::vector<int64_t>{25, 3, 32, 32});
  CHECK(fine->train.images.equal(expected_images(0, 25)));
  CHECK(fine->test.images.equal(expected_images(25, 25)));
  CHECK(fine->num_classes == 100);
  CHECK(labels_of(fine->test).front() == 25);
  CHECK(labels_of(fine->test).back() == 49);
  CHECK(fine->class_names.front() == "apple");
  CHECK(fine->class_names[99] == "worm");
  CHECK(fine->mean == std::vector<double>{0.5071, 0.4865, 0.4409});

  auto coarse = load("{name: cifar100, root: " + dir.path() + ", labels: coarse}");
  CHECK(coarse->num_classes == 20);
  CHECK(labels_of(coarse->train)[21] == 1);
  CHECK(labels_of(coarse->test).front() == 5);
  CHECK(coarse->class_names.front() == "aquatic_mammals");
  CHECK(coarse->class_names.back() == "vehicles_2");

  std::string fine_names, coarse_names;
  for (int k = 0; k < 100; ++k) fine_names += "fine" + std::to_string(k) + "\n";
  for (int k = 0; k < 20; ++k) coarse_names += "coarse" + std::to_string(k) + "\n";
  write_file_atomic(dir / "fine_label_names.txt", fine_names);
  write_file_atomic(dir / "coarse_label_names.txt", coarse_names);
  CHECK(load("{name: cifar100, root: " + dir.path() + "}")->class_names[42] == "fine42");
  CHECK(load("{name: cifar100, root: " + dir.path() + ", labels: coarse}")->class_names[7] == "coarse7");

  CHECK_THROWS_WITH(parse_spec("stream: {dataset: {name: cifar100, labels: superclass}}", "x.yaml"),
                    Catch::Contains("stream.dataset.labels") && Catch::Contains("coarse"));
  // labels is CIFAR-100's alone
  CHECK_THROWS_WITH(parse_spec("stream: {dataset: {name: cifar10, labels: coarse}}", "x.yaml"),
                    Catch::Contains("unknown key"));
}

TEST_CASE("a split stream over cifar100 with increment 10 builds ten tasks", "[data][cifar][streams]") {
  test::TempDir dir("cifar100_split");
  write_fake_cifar100(dir.path(), 100);
  ExperimentSpec spec = parse_spec(
      "stream: {name: split, dataset: {name: cifar100, root: " + dir.path() + "}, increment: 10}", "x.yaml");
  auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
  stream->check_tasks();
  REQUIRE(stream->num_tasks() == 10);
  CHECK(stream->input_shape == std::vector<int64_t>{3, 32, 32});
  CHECK(stream->tasks[3].classes.size() == 10);
  CHECK(stream->tasks[3].train_rows.size(0) == 10);
  CHECK(stream->tasks[3].test_rows.size(0) == 10);
  // normalised per channel: the R plane with R's statistics, B with B's
  torch::Tensor x = stream->inputs(stream->train, stream->tasks[0].train_rows.slice(0, 0, 1), stream->tasks[0]);
  CHECK(x.sizes() == std::vector<int64_t>{1, 3, 32, 32});
  const int64_t row = stream->tasks[0].train_rows[0].item<int64_t>();
  CHECK(x[0][2][1][1].item<float>() == Approx((pixel(row, 2, 1, 1) / 255.0 - 0.4409) / 0.2762).epsilon(1e-5));
}

TEST_CASE("missing CIFAR data names the path, the expected files and where to get them", "[data][cifar]") {
  std::string err = load_error("{name: cifar10, root: /nonexistent/c10}");
  CHECK(err ==
        "stream.dataset.root: data set 'cifar10' not found: /nonexistent/c10/data_batch_1.bin does not exist "
        "(expected data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, "
        "test_batch.bin in /nonexistent/c10)\nhint: obtain the CIFAR-10 binary version (cifar-10-binary.tar.gz) "
        "from https://www.cs.toronto.edu/~kriz/cifar.html and extract it (root is its cifar-10-batches-bin "
        "directory); nothing is downloaded at run time");
  CHECK_THAT(load_error("{name: cifar100}"),
             Catch::StartsWith("stream.dataset.root: data set 'cifar100' not found: data/cifar-100-binary/train.bin "
                               "does not exist (expected train.bin, test.bin in data/cifar-100-binary)") &&
                 Catch::Contains("CIFAR-100 binary version (cifar-100-binary.tar.gz)"));

  // one file missing of six
  test::TempDir dir("cifar10_missing");
  write_fake_cifar10(dir.path());
  std::filesystem::remove(dir / "data_batch_4.bin");
  CHECK_THAT(load_error("{name: cifar10, root: " + dir.path() + "}"),
             Catch::StartsWith("stream.dataset.root: data set 'cifar10' not found: " + dir / "data_batch_4.bin"));

  // root given as the directory the archive was extracted in
  test::TempDir parent("cifar100_parent");
  std::filesystem::create_directories(parent / "cifar-100-binary");
  write_fake_cifar100(parent / "cifar-100-binary");
  CHECK_THAT(load_error("{name: cifar100, root: " + parent.path() + "}"),
             Catch::EndsWith("\nhint: root should be the data's own directory: " + parent / "cifar-100-binary"));
}

TEST_CASE("a truncated CIFAR file and an out-of-range label name the file and the record", "[data][cifar]") {
  test::TempDir dir("cifar_bad");
  write_fake_cifar10(dir.path());
  const std::string c10 = "{name: cifar10, root: " + dir.path() + "}";
  std::string batch = read_file(dir / "data_batch_2.bin");
  write_file_atomic(dir / "data_batch_2.bin", batch.substr(0, batch.size() - 1));
  CHECK(load_error(c10) == dir / "data_batch_2.bin" +
                               ": 9218 bytes is not a whole number of 3073-byte cifar10 records (2 records and "
                               "3072 bytes over); the file is truncated or is not a cifar10 batch file");
  write_file_atomic(dir / "data_batch_2.bin", "");
  CHECK(load_error(c10) == dir / "data_batch_2.bin" + ": empty file; expected cifar10 records of 3073 bytes");
  batch[2 * 3073] = 10;  // record 2's label
  write_file_atomic(dir / "data_batch_2.bin", batch);
  CHECK(load_error(c10) == dir / "data_batch_2.bin" +
                               ": label 10 at record 2 is outside cifar10's 10 classes (0..9); the file is corrupt "
                               "or belongs to another data set");

  test::TempDir dir100("cifar100_bad");
  write_fake_cifar100(dir100.path());
  const std::string c100 = "{name: cifar100, root: " + dir100.path() + "}";
  std::string test_bin = read_file(dir100 / "test.bin");
  test_bin[3074 + 1] = 100;  // record 1's fine label
  write_file_atomic(dir100 / "test.bin", test_bin);
  CHECK(load_error(c100) == dir100 / "test.bin" +
                                ": fine label 100 at record 1 is outside cifar100's 100 fine classes (0..99); the "
                                "file is corrupt or belongs to another data set");
  // the label byte not in use is checked too: a bad one means a corrupt file
  test_bin[3074 + 1] = 99;
  test_bin[3 * 3074] = 20;  // record 3's coarse label
  write_file_atomic(dir100 / "test.bin", test_bin);
  CHECK(load_error(c100) == dir100 / "test.bin" +
                                ": coarse label 20 at record 3 is outside cifar100's 20 coarse classes (0..19); "
                                "the file is corrupt or belongs to another data set");
  // a CIFAR-100 file read as CIFAR-10: 4 records of 3074 bytes are 4 of 3073 and 4 bytes over
  std::filesystem::copy_file(dir100 / "train.bin", dir / "test_batch.bin",
                             std::filesystem::copy_options::overwrite_existing);
  write_file_atomic(dir / "data_batch_2.bin", read_file(dir / "data_batch_1.bin"));
  CHECK_THAT(load_error(c10), Catch::Contains("test_batch.bin: 12296 bytes is not a whole number of 3073-byte cifar10 records (4 records "
                                                 "and 4 bytes over)"));
}

TEST_CASE("parse_cifar_batch works on bytes alone and owns its tensors", "[data][cifar]") {
  torch::Tensor images;
  {
    // one record: a narrowed single row counts as contiguous, yet must be copied
    std::string bytes = records(3, {{4}});
    Split s = parse_cifar_batch(bytes, "one", cifar10_format());
    images = s.images;
    CHECK(s.labels.sizes() == std::vector<int64_t>{1});
    CHECK(s.labels[0].item<int64_t>() == 4);
    std::fill(bytes.begin(), bytes.end(), '\0');
  }
  CHECK(images.equal(expected_images(3, 1)));
  Split s = parse_cifar_batch(records(0, {{2, 31}, {19, 0}}), "two", cifar100_format(/*coarse=*/true));
  CHECK(labels_of(s) == std::vector<int64_t>{2, 19});
  CHECK_THROWS_WITH(parse_cifar_batch(std::string(3073, '\0'), "c100", cifar100_format(false)),
                    Catch::Contains("c100: 3073 bytes is not a whole number of 3074-byte cifar100 records"));
  CHECK(parse_cifar_class_names("x\ny", "n", 2) == std::vector<std::string>{"x", "y"});
  CHECK_THROWS_WITH(parse_cifar_class_names("x\ny\nz\n", "n", 2), "n: 3 class names, expected 2 (one per line)");
  CHECK(registries().datasets.contains("cifar10"));
  CHECK(registries().datasets.contains("cifar100"));
}
