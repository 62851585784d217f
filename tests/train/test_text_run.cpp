// A text run end to end: a tiny T5 on the tiny text benchmark trains, evaluates by generation
// and exact match, writes its predictions, and resumes exactly after an interruption.
#include <catch2/catch.hpp>

#include <fstream>

#include <ATen/autocast_mode.h>

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

TEST_CASE("group_by_length reorders each epoch's batches by length, over the same rows", "[train][text]") {
  test::TempDir dir("text_grouped");
  auto run = [&](bool grouped) {
    ExperimentSpec spec = parse_spec(test::tiny_text_config(), "x.yaml",
                                     {parse_override(std::string("train.group_by_length=") + (grouped ? "true" : "false"))});
    RunOptions options;
    options.out_dir = dir / (grouped ? "grouped" : "plain");
    return run_experiment(spec, options).metrics;
  };
  nlohmann::json plain = run(false), grouped = run(true);
  CHECK(grouped["config"]["train"]["group_by_length"] == true);
  CHECK_FALSE(plain["config"]["train"].contains("group_by_length"));  // absent at its default
  CHECK(grouped["per_task"][0]["samples"] == plain["per_task"][0]["samples"]);
  CHECK(grouped["per_task"][0]["mean_loss"] != plain["per_task"][0]["mean_loss"]);  // other batches
}

TEST_CASE("replay and data-mixing replay run on text, DER is refused", "[train][text]") {
  test::TempDir dir("text_replay");
  auto run = [&](const std::string& strategy) {
    ExperimentSpec spec = parse_spec(test::tiny_text_config(), "x.yaml", {parse_override("strategy=" + strategy)});
    RunOptions options;
    options.out_dir = dir / std::to_string(std::hash<std::string>{}(strategy));
    return run_experiment(spec, options).metrics;
  };
  // ER: memory rows (padded to other lengths) join every batch of the second task
  nlohmann::json er = run("{name: replay, memory_size: 6}");
  CHECK(er["strategy_state"]["memory"]["size"] == 6);
  CHECK(er["per_task"][1]["samples"].get<int64_t>() > 2 * 12);
  // MIGU's replay: 25% of SST-2's 12 rows (3) mixed into agnews' training data
  nlohmann::json mixed = run("{name: migu, base: {name: cumulative, past_fraction: 0.25}}");
  CHECK(mixed["per_task"][1]["samples"] == 2 * (12 + 3));
  CHECK_THROWS_WITH(run("{name: der}"), Catch::Contains("der and derpp"));
}

TEST_CASE("train.precision: bf16 autocasts training and generation, weights stay fp32", "[train][text][bf16]") {
  test::TempDir dir("text_bf16");
  auto run = [&](const std::string& precision) {
    ExperimentSpec spec = parse_spec(test::tiny_text_config(), "x.yaml",
                                     {parse_override("train.precision=" + precision), parse_override("train.epochs=40")});
    RunOptions options;
    options.out_dir = dir / precision;
    return run_experiment(spec, options).metrics;
  };
  nlohmann::json fp32 = run("fp32"), bf16 = run("bf16");
  CHECK(bf16["config"]["train"]["precision"] == "bf16");
  CHECK_FALSE(fp32["config"]["train"].contains("precision"));  // absent at its default
  const double a = fp32["per_task"][0]["mean_loss"], b = bf16["per_task"][0]["mean_loss"];
  CHECK(a != b);                           // the forward ran in bf16
  CHECK(std::abs(a - b) < 0.15 * a);       // ... and trained the same way
  CHECK(bf16["accuracy"]["matrix"][0][0].get<double>() >= 50.0);  // learns SST-2 (majority 50%)
  CHECK_FALSE(at::autocast::is_cpu_enabled());  // the guard restored the state
}
