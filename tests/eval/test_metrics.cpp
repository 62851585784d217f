// eval/: metric formulas on hand-computed matrices, and the evaluator's scoring rules.
#include <catch2/catch.hpp>

#include "clrun/eval/evaluator.hpp"
#include "clrun/eval/metrics.hpp"

using namespace clrun;

TEST_CASE("named metrics follow the protocol's formulas", "[eval][metrics]") {
  // three tasks with 100, 100, 200 test samples
  AccuracyMatrix m({100, 100, 200});
  m.set_random_init({10, 20, 20});      // 10%, 20%, 10%
  m.add_row({90, 30, 0});               // 90, 30, 0
  m.add_row({60, 80, 40});              // 60, 80, 20
  m.add_row({50, 70, 180});             // 50, 70, 90
  Metrics x = compute_metrics(m);
  CHECK(x.final_average_accuracy == Approx((50 + 70 + 90) / 3.0));
  CHECK(x.final_accuracy_samplewise == Approx(100.0 * (50 + 70 + 180) / 400));
  // incremental: after t=0: 90; t=1: (60+80)/200 = 70; t=2: 300/400 = 75
  CHECK(x.incremental_accuracy_curve == std::vector<double>{90, 70, 75});
  CHECK(x.average_incremental_accuracy == Approx((90 + 70 + 75) / 3.0));
  CHECK(x.average_accuracy_curve[1] == Approx(70));
  // forgetting: task0 max(90,60)-50 = 40; task1 max(30,80)-70 = 10
  REQUIRE(x.forgetting);
  CHECK(*x.forgetting == Approx(25));
  // bwt: (50-90) + (70-80) over 2
  CHECK(*x.bwt == Approx(-25));
  // fwt: (R[0][1] - init1) + (R[1][2] - init2) = (30-20) + (20-10) over 2
  CHECK(*x.fwt == Approx(10));
}

TEST_CASE("forgetting takes its max over rows t >= i only", "[eval][metrics]") {
  // Row 0 scores task 1 at 95 before task 1 was learned (domain-IL can); the max must not see it.
  AccuracyMatrix m({100, 100, 100});
  m.add_row({90, 95, 0});
  m.add_row({60, 80, 40});
  m.add_row({50, 70, 90});
  // task 0: max(90, 60) - 50 = 40; task 1: max(80) - 70 = 10 (the other reading gives 95 - 70 = 25)
  CHECK(*compute_metrics(m).forgetting == Approx(25));
}

TEST_CASE("metrics are undefined, not zero, where the formula is empty", "[eval][metrics]") {
  AccuracyMatrix m({10, 10});
  m.add_row({5, 0});
  Metrics x = compute_metrics(m);
  CHECK(x.final_average_accuracy == Approx(50));
  CHECK_FALSE(x.forgetting);
  CHECK_FALSE(x.bwt);
  CHECK_FALSE(x.fwt);
  CHECK(to_json(x).at("fwt").is_null());
  m.add_row({5, 5});
  CHECK(compute_metrics(m).forgetting);
  CHECK_FALSE(compute_metrics(m).fwt);  // no random-init row
}

TEST_CASE("accuracy matrices round-trip through JSON", "[eval][metrics]") {
  AccuracyMatrix m({4, 8});
  m.set_random_init({1, 2});
  m.add_row({3, 4});
  AccuracyMatrix back = AccuracyMatrix::from_json(m.to_json());
  CHECK(back.to_json() == m.to_json());
  CHECK(m.to_json().at("matrix")[0][1] == Approx(50.0));
}

TEST_CASE("logit masks keep only the given classes", "[eval]") {
  torch::Tensor mask = Evaluator::logit_mask({1, 3}, 5, torch::kCPU);
  torch::Tensor logits = torch::tensor({{9.0f, 1.0f, 8.0f, 2.0f, 7.0f}});
  CHECK((logits + mask).argmax(1).item<int64_t>() == 3);
  CHECK(torch::isfinite(mask).all().item<bool>());
}
