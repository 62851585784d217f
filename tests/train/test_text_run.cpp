// A text run end to end: a tiny T5 on the tiny text benchmark trains, evaluates by generation
// and exact match, writes its predictions, and resumes exactly after an interruption.
#include <catch2/catch.hpp>

#include <fstream>

#include "support.hpp"

using namespace clrun;

TEST_CASE("a text run trains a tiny T5, scores by exact match and writes its predictions", "[train][text]") {
  test::TempDir dir("text_run");
  ExperimentSpec spec = parse_spec(test::tiny_text_config(), "x.yaml", {parse_override("train.epochs=40")});
  RunOptions options;
  options.out_dir = dir / "run";
  nlohmann::json m = run_experiment(spec, options).metrics;
  REQUIRE(m["status"] == "complete");
  CHECK(m["scenario"] == "instruction-il");
  // SST-2's 6 test rows (training sentences, so learnable), one labelled "-" (never matched):
  // the model gets at least 4 of 6, above the majority rate (3 of 6).
  const auto& acc = m["accuracy"]["matrix"];
  INFO(m["accuracy"].dump());
  CHECK(acc[0][0].get<double>() >= 4.0 / 6 * 100 - 1e-9);
  // predictions_after_task1.jsonl: every test row of both tasks, with its label and verdict.
  std::ifstream in(dir / "run/predictions_after_task1.jsonl");
  std::string line;
  int64_t rows = 0, correct = 0, unlabelled = 0;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    ++rows;
    correct += j["correct"].get<bool>();
    unlabelled += j["label"].is_null();
  }
  CHECK(rows == 12);
  CHECK(unlabelled == 1);
  const auto& counts = m["accuracy"]["correct"][1];
  CHECK(correct == counts[0].get<int64_t>() + counts[1].get<int64_t>());
}

TEST_CASE("a text run interrupted mid-task resumes with identical numbers", "[train][text][resume]") {
  test::TempDir dir("text_resume");
  ExperimentSpec spec = parse_spec(test::tiny_text_config(), "x.yaml", {parse_override("train.epochs=3")});
  auto [expected, resumed] = test::run_interrupted_and_resumed(spec, dir.path(), 1, 2);
  CHECK(resumed["accuracy"]["correct"] == expected["accuracy"]["correct"]);
  CHECK(resumed["per_task"][1]["mean_loss"] == expected["per_task"][1]["mean_loss"]);
}
