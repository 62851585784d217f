// data/: IDX reader/writer and the MNIST-format data sets.
#include <catch2/catch.hpp>

#include "clrun/components.hpp"
#include "clrun/data/idx.hpp"
#include "clrun/io/atomic.hpp"
#include "support.hpp"

using namespace clrun;

TEST_CASE("IDX round trip, plain and gzip", "[data][idx]") {
  test::TempDir dir("idx");
  torch::Tensor t = torch::randint(0, 256, {3, 4, 5}, torch::kInt64).to(torch::kUInt8);
  for (const std::string name : {"a-idx3-ubyte", "b-idx3-ubyte.gz"}) {
    write_idx(dir / name, t);
    torch::Tensor back = read_idx(dir / name);
    CHECK(back.sizes() == t.sizes());
    CHECK(back.equal(t));
  }
  // the gzip file really is compressed (starts with the gzip magic)
  std::string gz = read_file(dir / "b-idx3-ubyte.gz");
  CHECK(static_cast<unsigned char>(gz[0]) == 0x1f);
}

TEST_CASE("IDX format errors name the file", "[data][idx]") {
  test::TempDir dir("idx_bad");
  write_file_atomic(dir / "bad", std::string("\x00\x00\x0d\x01\x00\x00\x00\x01x", 9));
  CHECK_THROWS_WITH(read_idx(dir / "bad"), Catch::Contains("bad: IDX element type"));
  write_file_atomic(dir / "short", std::string("\x00\x00\x08\x01\x00\x00\x00\x05xy", 10));
  CHECK_THROWS_WITH(read_idx(dir / "short"), Catch::Contains("promises 5 bytes of data, file has 2"));
  CHECK_THROWS_WITH(read_idx(dir / "missing"), Catch::Contains("missing: cannot open file"));
}

TEST_CASE("mnist-format data set loads, and a missing one says what and where", "[data]") {
  test::TempDir dir("mnist");
  test::write_tiny_mnist(dir.path(), 4, 2, 12);
  auto spec = parse_spec("stream: {dataset: {name: mnist, root: " + dir.path() + "}}", "x.yaml");
  auto ds = spec.dataset.build();
  CHECK(ds->train.images.sizes() == std::vector<int64_t>{40, 1, 12, 12});
  CHECK(ds->test.labels.size(0) == 20);
  CHECK(ds->num_classes == 10);
  CHECK(ds->train.labels.dtype() == torch::kInt64);

  auto missing = parse_spec("stream: {dataset: {name: fashion-mnist, root: /nonexistent/fm}}", "x.yaml");
  CHECK_THROWS_WITH(missing.dataset.build(),
                    Catch::Contains("/nonexistent/fm/train-images-idx3-ubyte[.gz] does not exist") &&
                        Catch::Contains("t10k-labels-idx1-ubyte[.gz]") && Catch::Contains("dataset-fashion-mnist"));
}
