// streams/: class orders (numpy-exact), split, permuted and rotated streams.
#include <catch2/catch.hpp>

#include "clrun/streams/class_order.hpp"
#include "clrun/streams/stream.hpp"
#include "support.hpp"

using namespace clrun;

TEST_CASE("numpy_seed class orders match numpy's legacy permutation", "[streams][class_order]") {
  CHECK(numpy_permutation(1993, 10) == std::vector<int64_t>{4, 2, 7, 6, 0, 3, 5, 8, 9, 1});
  std::vector<int64_t> c100 = {68, 56, 78, 8,  23, 84, 90, 65, 74, 76, 40, 89, 3,  92, 55, 9,  26, 80, 43, 38,
                               58, 70, 77, 1,  85, 19, 17, 50, 28, 53, 13, 81, 45, 82, 6,  59, 83, 16, 15, 44,
                               91, 41, 72, 60, 79, 52, 20, 10, 31, 54, 37, 95, 14, 71, 96, 98, 97, 2,  64, 66,
                               42, 22, 35, 86, 24, 34, 87, 21, 99, 0,  88, 27, 18, 94, 11, 12, 47, 25, 30, 46,
                               62, 69, 36, 61, 7,  63, 75, 5,  32, 4,  51, 48, 73, 93, 39, 67, 29, 49, 57, 33};
  CHECK(numpy_permutation(1993, 100) == c100);
  std::vector<int64_t> c200 = numpy_permutation(1993, 200);
  c200.resize(20);
  CHECK(c200 == std::vector<int64_t>{168, 136, 51, 9, 183, 101, 171, 99, 42, 159, 191, 70, 16, 188, 27, 10, 175, 26, 68, 187});
}

TEST_CASE("class order lists must be permutations", "[streams][class_order]") {
  ClassOrder o;
  o.kind = ClassOrder::Kind::list;
  o.list = {0, 1, 1};
  CHECK_THROWS_WITH(o.resolve(3, "stream.class_order"), Catch::Contains("stream.class_order: the list must be a permutation of 0..2"));
}

namespace {
struct Fixture {
  test::TempDir dir{"streams"};
  Fixture() { test::write_tiny_mnist(dir.path(), 6, 3, 12); }
  std::shared_ptr<Stream> build(const std::string& stream_yaml, uint64_t seed = 0) {
    auto spec = parse_spec("stream: " + stream_yaml, "x.yaml",
                           {parse_override("stream.dataset={name: mnist, root: " + dir.path() + "}")});
    return spec.stream.build(spec.dataset.build(), seed);
  }
  std::shared_ptr<const Dataset> build_dataset() {
    auto spec = parse_spec("{}", "x.yaml", {parse_override("stream.dataset={name: mnist, root: " + dir.path() + "}")});
    return spec.dataset.build();
  }
};
}  // namespace

TEST_CASE("split streams: base session, increments, remainder, remapped labels", "[streams][split]") {
  Fixture f;
  // A class order that is not its own inverse (order[order[k]] != k for most k), so a label
  // mapping applied in the wrong direction (new = order[orig] instead of new = order.index(orig))
  // gives other classes to the tasks and other targets.
  const std::vector<int64_t> order = {7, 2, 9, 0, 5, 8, 1, 4, 3, 6};
  std::vector<int64_t> position(10);
  for (int64_t k = 0; k < 10; ++k) position[order[k]] = k;
  REQUIRE(position != order);
  auto s = f.build("{name: split, base_classes: 4, increment: 3, class_order: [7, 2, 9, 0, 5, 8, 1, 4, 3, 6]}");
  REQUIRE(s->num_tasks() == 3);  // 4 + 3 + 3
  CHECK(s->tasks[0].classes == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(s->tasks[1].classes == std::vector<int64_t>{4, 5, 6});
  CHECK(s->tasks[2].classes == std::vector<int64_t>{7, 8, 9});
  CHECK(s->class_order == order);
  CHECK(s->tasks[0].train_rows.size(0) == 4 * 6);
  CHECK(s->tasks[1].test_rows.size(0) == 3 * 3);
  // Which original classes each task holds: task 0 = original 7, 2, 9, 0; task 1 = 5, 8, 1;
  // task 2 = 4, 3, 6. The original class of a row is read from the data set before remapping.
  auto data = f.build_dataset();
  const std::vector<std::vector<int64_t>> originals = {{0, 2, 7, 9}, {1, 5, 8}, {3, 4, 6}};
  for (const Split* split : {&s->train, &s->test}) {
    const bool is_train = split == &s->train;
    const Split& raw = is_train ? data->train : data->test;
    for (int t = 0; t < 3; ++t) {
      INFO("task " << t << (is_train ? " train" : " test"));
      torch::Tensor rows = is_train ? s->tasks[t].train_rows : s->tasks[t].test_rows;
      torch::Tensor orig = std::get<0>(torch::_unique(raw.labels.index_select(0, rows)));
      std::vector<int64_t> got(orig.data_ptr<int64_t>(), orig.data_ptr<int64_t>() + orig.numel());
      CHECK(got == originals[t]);
      // and every row's target is the position of its original class in the order
      for (int64_t i = 0; i < rows.size(0); ++i) {
        const int64_t r = rows[i].item<int64_t>();
        const int64_t o = raw.labels[r].item<int64_t>();
        CHECK(split->labels[r].item<int64_t>() == position[o]);
      }
    }
  }
  // the tiny data's class c has its bright bar at row c + 1: label id k's images have it at row order[k] + 1
  for (int64_t k : {0, 1, 4, 8}) {
    INFO("label id " << k);
    torch::Tensor rows = s->train.labels.eq(k).nonzero().view(-1);
    REQUIRE(rows.size(0) == 6);
    torch::Tensor bar = s->train.images.index_select(0, rows).select(1, 0).select(1, order[k] + 1);
    CHECK(bar.eq(220).all().item<bool>());
  }
  CHECK(s->class_names[0] == data->class_names[7]);

  auto rem = f.build("{name: split, increment: 4}");
  REQUIRE(rem->num_tasks() == 3);
  CHECK(rem->tasks[2].classes.size() == 2);  // 4 + 4 + 2 (PyCIL: remainder is a smaller task)
  CHECK(f.build("{name: split, increment: 2, num_tasks: 2}")->num_tasks() == 2);
  CHECK_THROWS_WITH(f.build("{name: split, increment: 2, num_tasks: 9}"), Catch::Contains("stream.num_tasks"));
  CHECK(rem->classes_of(0, 1).size() == 8);
}

TEST_CASE("inputs are normalised with the data set's statistics", "[streams]") {
  Fixture f;
  auto s = f.build("{name: split}");
  torch::Tensor rows = torch::arange(5, torch::kInt64);
  torch::Tensor x = s->inputs(s->train, rows, s->tasks[0]);
  torch::Tensor expect = (s->train.images.index_select(0, rows).to(torch::kFloat32) / 255.0 - 0.1307) / 0.3081;
  CHECK(torch::allclose(x, expect, 1e-5, 1e-5));
}

TEST_CASE("permuted streams: identity first, seeded and deterministic permutations", "[streams][permuted]") {
  Fixture f;
  auto a = f.build("{name: permuted, num_tasks: 3}", 5);
  auto b = f.build("{name: permuted, num_tasks: 3}", 5);
  auto c = f.build("{name: permuted, num_tasks: 3}", 6);
  REQUIRE(a->num_tasks() == 3);
  CHECK(a->scenario == Scenario::domain_il);
  CHECK_FALSE(a->tasks[0].transform);
  torch::Tensor rows = torch::arange(4, torch::kInt64);
  torch::Tensor xa = a->inputs(a->train, rows, a->tasks[1]);
  CHECK(xa.equal(b->inputs(b->train, rows, b->tasks[1])));
  CHECK_FALSE(xa.equal(c->inputs(c->train, rows, c->tasks[1])));
  CHECK_FALSE(xa.equal(a->inputs(a->train, rows, a->tasks[2])));
  // a permutation moves pixels but keeps their multiset
  torch::Tensor x0 = a->inputs(a->train, rows, a->tasks[0]);
  CHECK(torch::allclose(std::get<0>(xa.flatten(1).sort(1)), std::get<0>(x0.flatten(1).sort(1)), 1e-5, 1e-5));
  CHECK(a->tasks[1].train_rows.size(0) == a->train.size());
}

TEST_CASE("rotated streams rotate by the task's angle", "[streams][rotated]") {
  Fixture f;
  auto s = f.build("{name: rotated, num_tasks: 2, angles: [0, 90]}");
  torch::Tensor rows = torch::arange(3, torch::kInt64);
  torch::Tensor x0 = s->inputs(s->train, rows, s->tasks[0]);
  torch::Tensor x90 = s->inputs(s->train, rows, s->tasks[1]);
  // 90 degrees on an even-sized grid maps pixels onto pixels exactly. The convention (the spec
  // names none) is the implementation's: positive angles turn the image counter-clockwise as
  // displayed (row 0 at the top), as torchvision's rotate and torch.rot90(x, 1, {H, W}) do.
  CHECK(torch::allclose(x90, torch::rot90(x0, 1, {2, 3}), 1e-4, 1e-4));
  CHECK_FALSE(torch::allclose(x90, torch::rot90(x0, -1, {2, 3}), 1e-4, 1e-4));
  CHECK_THROWS_WITH(f.build("{name: rotated, num_tasks: 3, angles: [0, 90]}"), Catch::Contains("stream.angles: has 2 angles"));
}

TEST_CASE("rotation direction: a single bright pixel lands where a counter-clockwise turn puts it", "[streams][rotated]") {
  Fixture f;
  // default angles: t * max_angle / num_tasks = 0, 90, 180, 270
  auto s = f.build("{name: rotated, num_tasks: 4, max_angle: 360}");
  // 12 x 12, one bright pixel at row 2, column 9 (upper right)
  torch::Tensor raw = torch::zeros({1, 1, 12, 12}, torch::kUInt8);
  raw[0][0][2][9] = 255;
  const double bright = (1.0 - 0.1307) / 0.3081, dark = -0.1307 / 0.3081;
  auto where = [&](int t) {
    torch::Tensor x = s->prepare(raw, s->tasks[t])[0][0];
    const int64_t at = x.argmax().item<int64_t>();
    CHECK(x.max().item<double>() == Approx(bright).margin(1e-3));
    // everything else stays black
    CHECK(x.lt(dark + 1e-3).sum().item<int64_t>() == 143);
    return std::make_pair(at / 12, at % 12);
  };
  CHECK(where(0) == std::make_pair<int64_t, int64_t>(2, 9));
  // counter-clockwise by 90: upper right -> upper left (clockwise would give lower right, (9, 9))
  CHECK(where(1) == std::make_pair<int64_t, int64_t>(2, 2));
  CHECK(where(2) == std::make_pair<int64_t, int64_t>(9, 2));  // 180: lower left
  CHECK(where(3) == std::make_pair<int64_t, int64_t>(9, 9));  // 270 counter-clockwise = 90 clockwise
}

TEST_CASE("a validation split is carved from the training data, stratified and fixed", "[streams][validation]") {
  test::TempDir dir("validation");
  test::write_tiny_mnist(dir.path());
  auto build = [&](uint64_t seed) {
    ExperimentSpec spec = parse_spec(test::tiny_config(dir.path()), "tiny.yaml",
                                     {parse_override("stream.validation=0.25"), parse_override("seed=" + std::to_string(seed))});
    auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
    stream->carve_validation(spec.stream_common.validation);
    return stream;
  };
  auto s = build(3);
  CHECK(s->validation);
  CHECK(s->train.size() == 150);  // 200 training images, 25% held out
  CHECK(s->test.size() == 50);
  for (const Task& t : s->tasks) {
    CHECK(t.train_rows.size(0) == 30);  // two classes of 20 minus 5 each
    CHECK(t.test_rows.size(0) == 10);
    for (int64_t c : t.classes) CHECK(s->test.labels.index_select(0, t.test_rows).eq(c).sum().item<int64_t>() == 5);
  }
  // the held-out images are training images that left the training split, the same for every run seed
  auto other = build(4);
  CHECK(other->test.images.equal(s->test.images));
  auto flat = [](const torch::Tensor& x) { return x.flatten(1).to(torch::kInt64); };
  torch::Tensor d = torch::cdist(flat(s->test.images).to(torch::kFloat32), flat(s->train.images).to(torch::kFloat32));
  CHECK(d.min().item<float>() > 0);
}
