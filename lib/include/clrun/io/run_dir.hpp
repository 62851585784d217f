// The run directory: config.yaml / config.json (resolved), metrics.json, log.txt and
// checkpoints/task_NNN.pt with checkpoints/latest naming the newest. Every write is atomic.
#pragma once
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace clrun {

class RunDir {
 public:
  explicit RunDir(std::string path);
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  bool exists() const;
  void create() const;

  void write_json(const std::string& name, const nlohmann::json& j) const;
  void write_text(const std::string& name, const std::string& text) const;
  std::optional<nlohmann::json> read_json(const std::string& name) const;

  std::string checkpoint_path(int task) const;
  /// Records `task`'s checkpoint as the newest; with `keep_only_latest`, deletes the older one.
  void set_latest_checkpoint(int task, bool keep_only_latest) const;
  /// The newest checkpoint's task, if any.
  std::optional<int> latest_checkpoint() const;

 private:
  std::string path_;
};

}  // namespace clrun
