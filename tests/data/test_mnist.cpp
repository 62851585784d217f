// data/mnist + the stream's task checks: a data set declares its classes; labels outside them and
// tasks without samples are errors, never a silently different stream.
#include <catch2/catch.hpp>

#include "clrun/data/idx.hpp"
#include "support.hpp"

using namespace clrun;

namespace {
std::string load_error(const std::string& yaml) {
  try {
    ExperimentSpec spec = parse_spec(yaml, "x.yaml");
    auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
    stream->check_tasks();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("a label outside the data set's classes names the file and the first bad index", "[data]") {
  test::TempDir dir("badlabel");
  test::write_tiny_mnist(dir.path());
  const std::string yaml = "stream: {dataset: {name: mnist, root: " + dir.path() + "}}";
  CHECK(load_error(yaml).empty());
  torch::Tensor labels = read_idx(dir / "t10k-labels-idx1-ubyte");
  labels[37] = 77;  // one corrupted byte
  labels[50] = 12;
  write_idx(dir / "t10k-labels-idx1-ubyte", labels);
  CHECK(load_error(yaml) == dir / "t10k-labels-idx1-ubyte" +
                                ": label 77 at index 37 is outside mnist's 10 classes (0..9); the file is "
                                "corrupt or belongs to another data set");
}

TEST_CASE("a task without training or test samples is an error naming it", "[data][streams]") {
  test::TempDir dir("emptytask");
  test::write_tiny_mnist(dir.path());
  // Drop every test sample of class 5 (task 2 of increment 2 holds classes 4 and 5; only class 4 left)
  // and then of class 4 too.
  torch::Tensor x = read_idx(dir / "t10k-images-idx3-ubyte"), y = read_idx(dir / "t10k-labels-idx1-ubyte");
  torch::Tensor keep = (y != 4).logical_and(y != 5).nonzero().view(-1);
  write_idx(dir / "t10k-images-idx3-ubyte", x.index_select(0, keep));
  write_idx(dir / "t10k-labels-idx1-ubyte", y.index_select(0, keep));
  CHECK(load_error("stream: {dataset: {name: mnist, root: " + dir.path() + "}, increment: 2}") ==
        "stream: task 2 (classes: 4, 5) has no test samples in mnist");
  // A validation split too small to hold a sample of each class
  test::TempDir dir2("emptyval");
  test::write_tiny_mnist(dir2.path(), /*train_per_class=*/3);
  std::string err;
  try {
    ExperimentSpec spec =
        parse_spec("stream: {dataset: {name: mnist, root: " + dir2.path() + "}, validation: 0.1}", "x.yaml");
    auto stream = spec.stream.build(spec.dataset.build(), spec.seed);
    stream->carve_validation(0.1);
    stream->check_tasks();
  } catch (const InputError& e) {
    err = e.what();
  }
  CHECK(err == "stream: task 0 (classes: 0, 1) has no validation samples in mnist; stream.validation may be "
               "too small for its classes");
}

TEST_CASE("an increment larger than the data set names the key the user wrote", "[data][streams]") {
  test::TempDir dir("increment");
  test::write_tiny_mnist(dir.path());
  const std::string root = "stream: {dataset: {name: mnist, root: " + dir.path() + "}, ";
  CHECK(load_error(root + "increment: 12}").rfind("stream.increment: the first task needs 12 classes but mnist has 10", 0) == 0);
  CHECK(load_error(root + "base_classes: 11, increment: 2}").rfind("stream.base_classes: the first task needs 11", 0) == 0);
}
