// `clrun export RUN_DIR [--task N] --out FILE` and `clrun forward CONFIG_OR_RUN --inputs FILE
// --out FILE`: models out of runs with public names, and models applied to tensors in a file.
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "clrun/core/error.hpp"
#include "clrun/io/model_io.hpp"
#include "commands.hpp"

namespace clrun::app {

namespace {
/// --task counts from 1 as the logs do; 0 (the default) means the newest checkpoint.
std::optional<int> task_index(int task) {
  if (task < 0) throw InputError("--task: expected a task number from 1, or 0 for the newest checkpoint");
  return task == 0 ? std::nullopt : std::optional<int>(task - 1);
}
}  // namespace

void set_export_command(CLI::App* sub) {
  auto run_dir = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto task = std::make_shared<int>(0);
  sub->add_option("run_dir", *run_dir, "a run directory")->required();
  sub->add_option("--task", *task, "the checkpoint after task N (counting from 1); default: the newest");
  sub->add_option("--out", *out, "the safetensors file to write")->required();
  sub->callback([=] {
    const std::size_t n = export_run(*run_dir, task_index(*task), *out);
    spdlog::info("wrote {} tensors to {} (the backbone's public names and head.*)", n, *out);
  });
}

void set_forward_command(CLI::App* sub) {
  auto source = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto inputs = std::make_shared<std::string>();
  auto input = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto classes = std::make_shared<int64_t>(0);
  auto task = std::make_shared<int>(0);
  sub->add_option("model", *source, "a config (weights from backbone.init) or a run directory (its checkpoint)")->required();
  sub->add_option("--set", *sets, "override a config key (repeatable)");
  sub->add_option("--inputs", *inputs, "safetensors file holding the input batch [B, C, H, W], normalised as the model expects "
                  "(t5: input_ids, attention_mask, labels or decoder_input_ids)")
      ->required();
  sub->add_option("--input", *input, "the input tensor's name (default: the file's only tensor)");
  sub->add_option("--out", *out, "the safetensors file to write: features [B, D] and logits [B, classes]")->required();
  sub->add_option("--num-classes", *classes, "head size of a config's model (default: the init file's head, else the data set's)");
  sub->add_option("--task", *task, "a run's checkpoint after task N (counting from 1); default: the newest");
  sub->callback([=] {
    forward_file(*source, *sets, *inputs, *input, *out, *classes, task_index(*task));
    spdlog::info("wrote features and logits to {}", *out);
  });
}

void set_generate_command(CLI::App* sub) {
  auto source = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto inputs = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto max_new = std::make_shared<int64_t>(50);
  auto task = std::make_shared<int>(0);
  sub->add_option("model", *source, "a t5 config (weights from backbone.init) or a text run directory")->required();
  sub->add_option("--set", *sets, "override a config key (repeatable)");
  sub->add_option("--inputs", *inputs, "safetensors file with input_ids [B, L] (int64) and optionally attention_mask")
      ->required();
  sub->add_option("--out", *out, "the safetensors file to write: generated [B, T] (0 after </s>)")->required();
  sub->add_option("--max-new-tokens", *max_new, "stop after this many tokens (default 50)")->check(CLI::PositiveNumber);
  sub->add_option("--task", *task, "a run's checkpoint after task N (counting from 1); default: the newest");
  sub->callback([=] {
    generate_file(*source, *sets, *inputs, *out, *max_new, task_index(*task));
    spdlog::info("wrote greedy generations to {}", *out);
  });
}

}  // namespace clrun::app
