// io/: the safetensors reader and writer, checked against the format's bytes (the reference
// implementation's own test vectors), header corruptions, dtype conversions and load_into.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "clrun/core/error.hpp"
#include "clrun/io/atomic.hpp"
#include "clrun/io/safetensors.hpp"
#include "support.hpp"

using namespace clrun;

/// The error's type and its message: Catch2 v2's CHECK_THROWS_MATCHES takes exception matchers only.
#define CHECK_THROWS_ERROR(expr, type, matcher) \
  do {                                          \
    CHECK_THROWS_AS(expr, type);                \
    CHECK_THROWS_WITH(expr, matcher);           \
  } while (0)

namespace {

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

/// A file: length prefix, `header` as given (no padding added), then `data`.
std::string file_bytes(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

template <typename T>
std::string raw(std::initializer_list<T> values) {
  std::string s;
  for (T v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
  return s;
}

/// One-tensor header entry text.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, std::uint64_t begin,
                  std::uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

}  // namespace

TEST_CASE("safetensors writer gives the reference implementation's bytes", "[io][safetensors]") {
  // The vectors of safetensors/src/tensor.rs (test_serialization, test_serialization_forced_alignement, test_empty).
  test::TempDir dir("st_bytes");
  const std::string data = raw<float>({0, 1, 2, 3, 4, 5});
  torch::Tensor t = torch::arange(6, torch::kFloat32);

  write_safetensors(dir / "a.safetensors", {{"attn.0", t.reshape({1, 2, 3})}});
  const std::string a = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  REQUIRE(a.size() == 64);  // a multiple of 8: no padding
  CHECK(read_file(dir / "a.safetensors") == file_bytes(a, data));

  write_safetensors(dir / "b.safetensors", {{"attn0", t.reshape({1, 1, 2, 3})}});
  const std::string b = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})";
  CHECK(read_file(dir / "b.safetensors") == file_bytes(b + std::string(7, ' '), data));  // 65 -> 72 bytes

  write_safetensors(dir / "empty.safetensors", {});
  CHECK(read_file(dir / "empty.safetensors") == file_bytes("{}      "));
  write_safetensors(dir / "meta.safetensors", {}, {{"framework", "pt"}});
  CHECK(read_file(dir / "meta.safetensors") == file_bytes(R"({"__metadata__":{"framework":"pt"}}     )"));

  // and they read back
  SafetensorsFile f(dir / "b.safetensors");
  CHECK(f.names() == std::vector<std::string>{"attn0"});
  CHECK(f.get("attn0").equal(t.reshape({1, 1, 2, 3})));
  CHECK(SafetensorsFile(dir / "meta.safetensors").metadata() == std::map<std::string, std::string>{{"framework", "pt"}});
  CHECK(SafetensorsFile(dir / "empty.safetensors").names().empty());
}

TEST_CASE("safetensors writer lays tensors out in the given order, after an 8-aligned header", "[io][safetensors]") {
  test::TempDir dir("st_layout");
  torch::Tensor i16 = torch::tensor({1, -2, 3}, torch::kInt16);
  torch::Tensor f64 = torch::tensor({0.5}, torch::kFloat64);
  write_safetensors(dir / "x.safetensors", {{"z", i16}, {"a", f64}}, {{"k", "v"}});
  const std::string bytes = read_file(dir / "x.safetensors");
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  const std::string json = R"({"__metadata__":{"k":"v"},)" + entry("z", "I16", "[3]", 0, 6) + "," +
                           entry("a", "F64", "[1]", 6, 14) + "}";
  CHECK(n == (json.size() + 7) / 8 * 8);
  CHECK(bytes.substr(8, n) == json + std::string(n - json.size(), ' '));
  CHECK(bytes.substr(8 + n) == raw<int16_t>({1, -2, 3}) + raw<double>({0.5}));
  SafetensorsFile f(dir / "x.safetensors");
  CHECK(f.names() == std::vector<std::string>{"z", "a"});  // file order, not sorted
}

TEST_CASE("safetensors reader reads a hand-built file", "[io][safetensors]") {
  test::TempDir dir("st_hand");
  // header in another order than the data, with spaces, a newline and extra fields, as other writers may
  const std::string header = " {\"w\": {\"data_offsets\": [4, 12], \"shape\": [2], \"dtype\": \"F32\", \"extra\": 1},\n"
                             "  \"__metadata__\": {\"format\": \"pt\"}, " +
                             entry("ids", "I32", "[1]", 0, 4) + ", " + entry("none", "U8", "[0, 3]", 12, 12) + "}   \n";
  write_file_atomic(dir / "h.safetensors", file_bytes(header, raw<int32_t>({-7}) + raw<float>({1.5f, -2.25f})));
  for (bool mmap : {true, false}) {
    set_safetensors_mmap(mmap);
    SafetensorsFile f(dir / "h.safetensors");
    CHECK(f.names() == std::vector<std::string>{"ids", "w", "none"});
    CHECK(f.metadata().at("format") == "pt");
    CHECK(f.info("w").dtype == "F32");
    CHECK(f.info("w").shape == std::vector<int64_t>{2});
    CHECK(f.info("w").begin == 4);
    CHECK(f.get("w").equal(torch::tensor({1.5f, -2.25f})));
    CHECK(f.get("ids").dtype() == torch::kInt32);
    CHECK(f.get("ids").item<int32_t>() == -7);
    CHECK(f.get("none").sizes() == std::vector<int64_t>{0, 3});
    CHECK(f.has("w"));
    CHECK_FALSE(f.has("W"));
  }
  set_safetensors_mmap(true);
}

TEST_CASE("safetensors round trip of every dtype, 0-d and empty tensors, metadata", "[io][safetensors]") {
  test::TempDir dir("st_round");
  torch::manual_seed(5);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", torch::randn({3, 4})},
      {"f16", torch::randn({2, 3}).to(torch::kHalf)},
      {"bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"f64", torch::randn({2, 2, 2}, torch::kFloat64)},
      {"i64", torch::tensor({std::numeric_limits<int64_t>::min(), int64_t(0), std::numeric_limits<int64_t>::max()})},
      {"i32", torch::tensor({-5, 7}, torch::kInt32)},
      {"i16", torch::tensor({-300, 300}, torch::kInt16)},
      {"i8", torch::tensor({-128, 127}, torch::kInt8)},
      {"u8", torch::tensor({0, 255}, torch::kUInt8)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(3.25)},
      {"empty", torch::empty({0, 4})},
      {"empty_i64", torch::empty({2, 0}, torch::kInt64)},
      {"transposed", torch::arange(6, torch::kFloat32).reshape({2, 3}).t()},  // not contiguous
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "é, \"quoted\"\n"}};
  write_safetensors(dir / "all.safetensors", tensors, meta);
  for (bool mmap : {true, false}) {
    set_safetensors_mmap(mmap);
    SafetensorsFile f(dir / "all.safetensors");
    CHECK(f.metadata() == meta);
    REQUIRE(f.names().size() == tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const auto& [name, t] = tensors[i];
      INFO(name);
      CHECK(f.names()[i] == name);
      torch::Tensor back = f.get(name, t.scalar_type());
      CHECK(back.scalar_type() == t.scalar_type());
      CHECK(back.sizes() == t.sizes());
      CHECK(back.is_contiguous());
      CHECK(back.equal(t));
    }
    CHECK(f.info("scalar").shape.empty());
    CHECK(f.info("bool").dtype == "BOOL");
    CHECK(f.info("bf16").dtype == "BF16");
  }
  set_safetensors_mmap(true);
}

TEST_CASE("safetensors F16 and BF16 read as F32 with torch's exact values", "[io][safetensors]") {
  test::TempDir dir("st_half");
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3555};
  const std::vector<float> f16_values = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-8f, INFINITY, 0.333251953125f};
  const std::vector<uint16_t> bf16 = {0x3F80, 0x4049, 0xFF80, 0x0001, 0xC2F7};
  const std::vector<float> bf16_values = {1.0f, 3.140625f, -INFINITY, 9.183549615799121e-41f, -123.5f};
  std::string data(reinterpret_cast<const char*>(f16.data()), 2 * f16.size());
  data.append(reinterpret_cast<const char*>(bf16.data()), 2 * bf16.size());
  write_file_atomic(dir / "h.safetensors",
                    file_bytes("{" + entry("h", "F16", "[6]", 0, 12) + "," + entry("b", "BF16", "[5]", 12, 22) + "}", data));
  SafetensorsFile f(dir / "h.safetensors");
  torch::Tensor h = f.get("h"), b = f.get("b");
  REQUIRE(h.dtype() == torch::kFloat32);
  for (std::size_t i = 0; i < f16_values.size(); ++i) CHECK(h[i].item<float>() == f16_values[i]);
  for (std::size_t i = 0; i < bf16_values.size(); ++i) CHECK(b[i].item<float>() == bf16_values[i]);
  // the same as torch's own conversions, to any float type
  CHECK(f.get("h", torch::kFloat64).equal(f.get("h", torch::kHalf).to(torch::kFloat64)));
  CHECK(f.get("b", torch::kHalf).equal(f.get("b", torch::kBFloat16).to(torch::kHalf)));
  // F32 written as F16 rounds as torch does
  torch::Tensor x = torch::tensor({0.1f, 1e-6f, 70000.0f});
  write_safetensors(dir / "x.safetensors", {{"x", x.to(torch::kHalf)}});
  CHECK(SafetensorsFile(dir / "x.safetensors").get("x").equal(x.to(torch::kHalf).to(torch::kFloat32)));
}

TEST_CASE("safetensors get: integer tensors keep their type unless asked, bad requests are InputErrors",
          "[io][safetensors]") {
  test::TempDir dir("st_types");
  write_safetensors(dir / "t.safetensors", {{"ids", torch::tensor({1, 2}, torch::kInt64)}, {"w", torch::ones({2})}});
  SafetensorsFile f(dir / "t.safetensors");
  CHECK(f.get("ids").dtype() == torch::kInt64);                    // default kFloat32 only applies to floats
  CHECK(f.get("ids", torch::kFloat64).dtype() == torch::kInt64);
  CHECK(f.get("ids", torch::kInt32).dtype() == torch::kInt32);     // asked for an integer type
  CHECK(f.get("w", torch::kFloat64).dtype() == torch::kFloat64);
  CHECK_THROWS_ERROR(f.get("w", torch::kInt64), InputError,
                       Catch::Equals(dir / "t.safetensors" + ": tensor \"w\": stored as F32, expected an integer type "
                                                                   "to read it as Long"));
  CHECK_THROWS_ERROR(f.get("idz"), InputError,
                       Catch::Contains("t.safetensors: no tensor \"idz\"") && Catch::Contains("did you mean 'ids'"));

  // BOOL bytes other than 0/1 read as true; U16 (not in torch 1.13) opens but cannot be read
  write_file_atomic(dir / "u.safetensors", file_bytes("{" + entry("b", "BOOL", "[3]", 0, 3) + "," +
                                                          entry("u", "U16", "[1]", 3, 5) + "}",
                                                      std::string("\x00\x01\x07", 3) + "ab"));
  SafetensorsFile u(dir / "u.safetensors");
  CHECK(u.get("b").equal(torch::tensor({false, true, true})));
  CHECK(u.info("u").dtype == "U16");
  CHECK_THROWS_ERROR(u.get("u"), InputError, Catch::Contains("u.safetensors: tensor \"u\": dtype U16 is not supported"));
}

TEST_CASE("safetensors header corruptions are InputErrors naming the file, the tensor and what was expected",
          "[io][safetensors]") {
  test::TempDir dir("st_bad");
  const std::string f4 = raw<float>({1, 2, 3, 4});  // 16 bytes
  struct Case {
    const char* what;
    std::string bytes;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"empty file", "", ": 0 bytes, too short for a safetensors file (expected an 8-byte header length first)"},
      {"truncated length", std::string("\x10\x00\x00", 3), ": 3 bytes, too short"},
      {"header longer than the file", le64(100) + "{}", ": safetensors header length 100 runs past the end of the file (10 bytes)"},
      {"header over 100 MB", le64(100'000'001) + "{}", ": safetensors header length 100000001 is more than the limit of 100000000 bytes"},
      {"huge header length", le64(~std::uint64_t(0)) + "{}", "is more than the limit"},
      {"bad JSON", file_bytes("{\"a\": {"), ": safetensors header is not valid JSON (parse error at line 1, column"},
      {"NUL padding", file_bytes(std::string("{}\0\0", 4)), "is not valid JSON (a NUL byte at header offset 2"},
      {"NUL and more", file_bytes(std::string("{}\0{\"a\": 1}", 11)), "is not valid JSON (a NUL byte"},
      {"invalid UTF-8", file_bytes("{\"\xff\": 1}"), "is not valid JSON"},
      {"not an object", file_bytes("[1, 2]"), ": safetensors header is JSON array, expected an object"},
      {"duplicate tensor", file_bytes("{" + entry("a", "F32", "[0]", 0, 0) + "," + entry("a", "F32", "[0]", 0, 0) + "}"),
       ": safetensors header has the key \"a\" twice"},
      {"entry not an object", file_bytes("{\"a\": 3}"), ": tensor \"a\": header entry is JSON number, expected an object"},
      {"missing field", file_bytes(R"({"a": {"dtype": "F32", "shape": [1]}})", f4.substr(0, 4)),
       ": tensor \"a\": header entry has no \"data_offsets\""},
      {"unknown dtype", file_bytes("{" + entry("a", "F33", "[4]", 0, 16) + "}", f4),
       ": tensor \"a\": unknown dtype \"F33\" (expected one of BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, U16"},
      {"dtype not a string", file_bytes(R"({"a": {"dtype": 4, "shape": [], "data_offsets": [0, 4]}})", f4.substr(0, 4)),
       ": tensor \"a\": unknown dtype 4"},
      {"negative dimension", file_bytes("{" + entry("a", "F32", "[-4]", 0, 16) + "}", f4),
       ": tensor \"a\": shape entry -4 is not a non-negative integer"},
      {"fractional dimension", file_bytes("{" + entry("a", "F32", "[4.0]", 0, 16) + "}", f4), "shape entry 4.0 is not"},
      {"shape not an array", file_bytes("{" + entry("a", "F32", "4", 0, 16) + "}", f4), "shape is JSON number, expected an array"},
      {"shape overflow", file_bytes("{" + entry("a", "F32", "[4294967296, 4294967296]", 0, 16) + "}", f4),
       ": tensor \"a\": shape [4294967296,4294967296] has more than 2^63 elements (overflow)"},
      {"zero-size shape overflow", file_bytes("{" + entry("a", "F32", "[0, 4294967296, 4294967296]", 0, 0) + "}"),
       "has more than 2^63 elements"},
      {"byte size overflow", file_bytes("{" + entry("a", "F64", "[2305843009213693952]", 0, 16) + "}", f4),
       ": tensor \"a\": shape [2305843009213693952] of F64 is more than 2^63 bytes"},
      {"size mismatch", file_bytes("{" + entry("a", "F32", "[3]", 0, 16) + "}", f4),
       ": tensor \"a\": data_offsets [0, 16] span 16 bytes, expected 12 for F32 [3]"},
      {"end before begin", file_bytes("{" + entry("a", "F32", "[0]", 8, 4) + "}", f4), "data_offsets [8, 4] end before they begin"},
      {"offsets not a pair", file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", f4),
       ": tensor \"a\": data_offsets [0,4,8] is not a pair [begin, end] of non-negative integers"},
      {"offsets out of range", file_bytes("{" + entry("a", "F32", "[4]", 8, 24) + "}", f4),
       ": tensor \"a\": data_offsets [8, 24] run past the end of the data (16 bytes after the header)"},
      {"huge offsets", file_bytes("{" + entry("a", "U8", "[1]", 18446744073709551614ull, 18446744073709551615ull) + "}", f4),
       "run past the end of the data"},
      {"overlapping", file_bytes("{" + entry("a", "F32", "[3]", 0, 12) + "," + entry("b", "F32", "[2]", 8, 16) + "}", f4),
       ": tensor \"b\": data_offsets [8, 16] overlap tensor \"a\" (which ends at 12)"},
      {"gap", file_bytes("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[1]", 12, 16) + "}", f4),
       ": tensor \"b\": data_offsets [12, 16] leave a gap: expected it to begin at 8, where tensor \"a\" ends"},
      {"gap at the start", file_bytes("{" + entry("a", "F32", "[1]", 12, 16) + "}", f4),
       "leave a gap: expected it to begin at 0, the data's start"},
      {"bytes after the last tensor", file_bytes("{" + entry("a", "F32", "[3]", 0, 12) + "}", f4),
       ": safetensors data section has 16 bytes, the tensors cover 12 (expected them to cover it exactly)"},
      {"metadata not strings", file_bytes(R"({"__metadata__": {"epoch": 3}})"),
       ": safetensors header: __metadata__[\"epoch\"] is JSON number, expected a string"},
      {"metadata not an object", file_bytes(R"({"__metadata__": "x"})"), "__metadata__ is JSON string, expected an object"},
  };
  int i = 0;
  for (const Case& c : cases) {
    INFO(c.what);
    const std::string path = dir / ("bad" + std::to_string(i++) + ".safetensors");
    write_file_atomic(path, c.bytes);
    for (bool mmap : {true, false}) {
      set_safetensors_mmap(mmap);
      CHECK_THROWS_ERROR(SafetensorsFile(path), InputError, Catch::StartsWith(path + ": ") && Catch::Contains(c.message));
    }
  }
  set_safetensors_mmap(true);
  CHECK_THROWS_ERROR(SafetensorsFile(dir / "missing.safetensors"), InputError,
                       Catch::Contains("missing.safetensors: cannot open file (No such file or directory)"));
  CHECK_THROWS_ERROR(SafetensorsFile(dir.path()), InputError, Catch::Contains(": not a regular file"));
  // a long or odd tensor name is quoted, escaped and shortened: the message stays one line
  write_file_atomic(dir / "odd.safetensors", file_bytes(R"({")" + std::string(300, 'x') + "\\n\": 1}"));
  try {
    SafetensorsFile{dir / "odd.safetensors"};
    FAIL("no error");
  } catch (const InputError& e) {
    const std::string what = e.what();
    CHECK(what.find('\n') == std::string::npos);
    CHECK(what.size() < 250);
    CHECK_THAT(what, Catch::Contains("xxx...\""));
  }
}

TEST_CASE("safetensors writer errors are WriteErrors and keep the previous file", "[io][safetensors]") {
  test::TempDir dir("st_write");
  const std::string path = dir / "w.safetensors";
  write_safetensors(path, {{"a", torch::ones({2})}});
  const std::string before = read_file(path);
  CHECK_THROWS_ERROR(write_safetensors(path, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}), WriteError,
                       Catch::Contains("w.safetensors: cannot write tensor \"a\": the name is given twice"));
  CHECK_THROWS_ERROR(write_safetensors(path, {{"__metadata__", torch::ones({1})}}), WriteError,
                       Catch::Contains("the name is reserved"));
  CHECK_THROWS_ERROR(write_safetensors(path, {{"c", torch::ones({1}, torch::kComplexFloat)}}), WriteError,
                       Catch::Contains("tensor \"c\": dtype ComplexFloat has no safetensors equivalent"));
  CHECK_THROWS_ERROR(write_safetensors(path, {{"u", torch::Tensor()}}), WriteError, Catch::Contains("undefined"));
  set_write_fault([](const std::string& p) { return p.find("w.safetensors") != std::string::npos; });
  CHECK_THROWS_ERROR(write_safetensors(path, {{"b", torch::zeros({3})}}), WriteError,
                       Catch::Contains("w.safetensors: cannot write"));
  set_write_fault(nullptr);
  CHECK(read_file(path) == before);
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()) == 1);
}

TEST_CASE("load_into copies by name, converts dtype, and reports missing/unexpected/mismatched", "[io][safetensors]") {
  test::TempDir dir("st_load");
  torch::manual_seed(1);
  torch::nn::Sequential source(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4), torch::nn::Linear(4, 2));
  {
    torch::NoGradGuard no_grad;
    source->named_buffers()["1.running_mean"].uniform_();
    source->named_buffers()["1.num_batches_tracked"].fill_(7);
  }
  std::vector<std::pair<std::string, torch::Tensor>> all;
  for (const auto& p : source->named_parameters()) all.emplace_back(p.key(), p.value().to(torch::kHalf));  // stored as F16
  for (const auto& b : source->named_buffers()) all.emplace_back(b.key(), b.value());
  write_safetensors(dir / "all.safetensors", all);

  SECTION("exact match, strict: every parameter and buffer copied, F16 -> F32") {
    torch::nn::Sequential target(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4), torch::nn::Linear(4, 2));
    LoadReport r = load_into(SafetensorsFile(dir / "all.safetensors"), *target, /*strict=*/true);
    CHECK(r.ok());
    CHECK(r.loaded.size() == 9);  // 2 x (weight, bias), BN weight, bias, running mean/var, num_batches_tracked
    for (const auto& p : target->named_parameters()) {
      CHECK(p.value().dtype() == torch::kFloat32);
      CHECK(p.value().equal(source->named_parameters()[p.key()].to(torch::kHalf).to(torch::kFloat32)));
      CHECK(p.value().requires_grad());
    }
    CHECK(target->named_buffers()["1.num_batches_tracked"].item<int64_t>() == 7);
    CHECK(target->named_buffers()["1.running_mean"].equal(source->named_buffers()["1.running_mean"]));
  }

  SECTION("rename maps file names to module names; an empty name skips a tensor") {
    torch::nn::Linear fc(3, 4);
    LoadReport r = load_into(SafetensorsFile(dir / "all.safetensors"), *fc, /*strict=*/true, [](const std::string& n) {
      return n.rfind("0.", 0) == 0 ? n.substr(2) : std::string();
    });
    CHECK(r.loaded == std::vector<std::string>{"bias", "weight"});
    CHECK(fc->weight.equal(source[0]->as<torch::nn::Linear>()->weight.to(torch::kHalf).to(torch::kFloat32)));
    CHECK_THROWS_ERROR(load_into(SafetensorsFile(dir / "all.safetensors"), *fc, false,
                                   [](const std::string&) { return std::string("weight"); }),
                         InputError, Catch::Contains("are both renamed to \"weight\""));
  }

  SECTION("missing, unexpected and mismatched: reported without strict, an error listing them with strict") {
    auto more = all;
    for (const char* extra : {"head.w", "head.b", "x1", "x2", "x3", "x4"}) more.emplace_back(extra, torch::zeros({1}));
    const std::string path = dir / "more.safetensors";
    write_safetensors(path, more);
    torch::nn::Sequential other(torch::nn::Linear(3, 5), torch::nn::BatchNorm1d(4), torch::nn::Linear(4, 2),
                                torch::nn::Linear(2, 2));
    auto linear = [&](int i) { return other[i]->as<torch::nn::Linear>(); };
    const torch::Tensor w0 = linear(0)->weight.clone(), w2 = linear(2)->weight.clone(), w3 = linear(3)->weight.clone();
    CHECK_THROWS_ERROR(
        load_into(SafetensorsFile(path), *other, /*strict=*/true), InputError,
        Catch::Equals(path + ": tensors do not match the module's parameters and buffers: 2 missing from the file "
                              "(\"3.bias\", \"3.weight\"); 6 not in the module (\"head.b\", \"head.w\", \"x1\", \"x2\", "
                              "\"x3\", ... (1 more)); 2 with other shapes (\"0.bias\" file [4] vs module [5], \"0.weight\" "
                              "file [4, 3] vs module [5, 3])"));
    CHECK(linear(2)->weight.equal(w2));  // strict: nothing copied
    LoadReport r = load_into(SafetensorsFile(path), *other, /*strict=*/false);
    CHECK(r.loaded == std::vector<std::string>{"1.bias", "1.num_batches_tracked", "1.running_mean", "1.running_var",
                                               "1.weight", "2.bias", "2.weight"});
    CHECK(r.missing == std::vector<std::string>{"3.bias", "3.weight"});
    CHECK(r.unexpected == std::vector<std::string>{"head.b", "head.w", "x1", "x2", "x3", "x4"});
    REQUIRE(r.mismatched.size() == 2);
    CHECK(r.mismatched[1].name == "0.weight");
    CHECK(r.mismatched[1].file_shape == std::vector<int64_t>{4, 3});
    CHECK(r.mismatched[1].module_shape == std::vector<int64_t>{5, 3});
    CHECK_FALSE(linear(2)->weight.equal(w2));
    CHECK(linear(2)->weight.equal(source[2]->as<torch::nn::Linear>()->weight.to(torch::kHalf).to(torch::kFloat32)));
    CHECK(linear(0)->weight.equal(w0));
    CHECK(linear(3)->weight.equal(w3));
  }

  SECTION("a floating tensor for an integer buffer is an error") {
    write_safetensors(dir / "f.safetensors", {{"1.num_batches_tracked", torch::ones({})}});
    torch::nn::Sequential target(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
    CHECK_THROWS_ERROR(load_into(SafetensorsFile(dir / "f.safetensors"), *target, false), InputError,
                         Catch::Contains("tensor \"1.num_batches_tracked\" (for \"1.num_batches_tracked\"): stored as "
                                         "F32, expected an integer type to read it as Long"));
  }
}
