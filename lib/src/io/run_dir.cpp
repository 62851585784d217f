// Run directory layout and atomic writes.
#include "clrun/io/run_dir.hpp"

#include <cstdio>
#include <filesystem>

#include "clrun/io/atomic.hpp"

namespace clrun {

namespace fs = std::filesystem;

RunDir::RunDir(std::string path) : path_(std::move(path)) {}

bool RunDir::exists() const { return fs::exists(path_); }

void RunDir::create() const { fs::create_directories(path_ + "/checkpoints"); }

void RunDir::write_json(const std::string& name, const nlohmann::json& j) const {
  write_file_atomic(file(name), j.dump(2) + "\n");
}

void RunDir::write_text(const std::string& name, const std::string& text) const { write_file_atomic(file(name), text); }

std::optional<nlohmann::json> RunDir::read_json(const std::string& name) const {
  if (!fs::is_regular_file(file(name))) return std::nullopt;
  try {
    return nlohmann::json::parse(read_file(file(name)));
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

std::string RunDir::checkpoint_path(int task) const {
  char name[32];
  std::snprintf(name, sizeof(name), "task_%03d.pt", task);
  return path_ + "/checkpoints/" + name;
}

void RunDir::set_latest_checkpoint(int task, bool keep_only_latest) const {
  std::optional<int> previous = latest_checkpoint();
  write_text("checkpoints/latest", std::to_string(task) + "\n");
  if (keep_only_latest && previous && *previous != task) {
    std::error_code ec;
    fs::remove(checkpoint_path(*previous), ec);
  }
}

std::optional<int> RunDir::latest_checkpoint() const {
  if (!fs::is_regular_file(file("checkpoints/latest"))) return std::nullopt;
  try {
    int task = std::stoi(read_file(file("checkpoints/latest")));
    if (fs::is_regular_file(checkpoint_path(task))) return task;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

}  // namespace clrun
