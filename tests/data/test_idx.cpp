// data/: IDX reader/writer and the MNIST-format data sets.
#include <catch2/catch.hpp>
#include <zlib.h>

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

namespace {
std::string idx_bytes(std::vector<uint32_t> dims, const std::string& payload) {
  std::string out = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((d >> shift) & 0xff));
  return out + payload;
}
std::string gzip(const std::string& plain) {
  z_stream zs{};
  deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, plain.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
  zs.avail_in = static_cast<uInt>(plain.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}
}  // namespace

TEST_CASE("IDX sizes that overflow or exceed the limit are errors before allocation", "[data][idx]") {
  // 2^31-1 cubed overflows int64 products; 4 x 65536 is 2^64
  CHECK_THROWS_WITH(parse_idx(idx_bytes({0x7fffffff, 0x7fffffff, 0x7fffffff}, "x"), "big"),
                    Catch::Contains("big: IDX sizes 2147483647x2147483647x... make more than 16 GiB"));
  CHECK_THROWS_WITH(parse_idx(idx_bytes({65536, 65536, 65536, 65536}, ""), "big"), Catch::Contains("16 GiB"));
  // a zero size does not let the others be absurd
  CHECK_THROWS_WITH(parse_idx(idx_bytes({0, 0x7fffffff, 0x7fffffff}, ""), "zero"), Catch::Contains("16 GiB"));
  CHECK_THROWS_WITH(parse_idx(idx_bytes({0x80000000}, ""), "neg"), Catch::Contains("neg: IDX dimension 0 is negative"));
  // within the limit but far more than the file holds
  CHECK_THROWS_WITH(parse_idx(idx_bytes({1u << 30, 8}, "xy"), "short"),
                    Catch::Contains("promises 8589934592 bytes of data, file has 2"));
  CHECK(parse_idx(idx_bytes({0, 3}, ""), "empty").sizes() == std::vector<int64_t>{0, 3});
}

TEST_CASE("gzip IDX: wrong sizes, truncation and inflation bombs are bounded errors", "[data][idx]") {
  const std::string plain = idx_bytes({2, 3, 4}, std::string(24, 'x'));
  const std::string gz = gzip(plain);
  CHECK(parse_idx(gz, "ok.gz").sizes() == std::vector<int64_t>{2, 3, 4});
  // two concatenated members (`cat a.gz b.gz`) are one stream
  CHECK(parse_idx(gzip(plain.substr(0, 10)) + gzip(plain.substr(10)), "two.gz").sizes() == std::vector<int64_t>{2, 3, 4});
  // a header promising 1 GiB in a few dozen gzip bytes fails before allocating it
  CHECK_THROWS_WITH(parse_idx(gzip(idx_bytes({1u << 30}, "abc")), "lie.gz"),
                    Catch::Contains("lie.gz: IDX header promises 1073741824 bytes of data, file has only"));
  CHECK_THROWS_WITH(parse_idx(gzip(idx_bytes({100}, "0123456789")), "short.gz"),
                    Catch::Contains("promises 100 bytes of data, file has 10"));
  CHECK_THROWS_WITH(parse_idx(gzip(idx_bytes({5}, "0123456789")), "long.gz"),
                    Catch::Contains("promises 5 bytes of data, file has more"));
  CHECK_THROWS_WITH(parse_idx(gz.substr(0, gz.size() - 12), "cut.gz"), Catch::Contains("cut.gz: truncated gzip data"));
  std::string bad = gz;
  bad[12] = static_cast<char>(bad[12] ^ 0x55);
  CHECK_THROWS_AS(parse_idx(bad, "bad.gz"), InputError);
  // a gzip bomb: 4 MiB of zeros, inflated with a 1 MiB limit
  test::TempDir dir("idx_bomb");
  write_file_atomic(dir / "bomb.gz", gzip(std::string(4 << 20, '\0')));
  CHECK_THROWS_WITH(read_maybe_gzip(dir / "bomb.gz", 1 << 20),
                    Catch::Contains("bomb.gz: gzip data inflates to more than 1048576 bytes (the limit)"));
  CHECK(read_maybe_gzip(dir / "bomb.gz").size() == (4u << 20));
}
