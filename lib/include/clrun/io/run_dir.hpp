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
  ~RunDir();
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  bool exists() const;
  /// Creates the directory (and checkpoints/); a path that cannot be created is bad input.
  void create() const;

  /// Takes the directory's advisory lock (`.lock`, holding pid and host) for this object's
  /// lifetime, creating the directory if needed. Another live clrun holding it is an InputError
  /// naming it; a lock file left by a killed process is taken over (the kernel released it).
  void lock();
  /// Whether the directory holds nothing but this run's lock.
  bool empty_but_lock() const;
  /// Removes everything in the directory except the lock (for --overwrite).
  void clear() const;
  /// Deletes temp files of writes that a killed process left; returns how many. Needs the lock.
  int remove_stale_temp_files() const;

  void write_json(const std::string& name, const nlohmann::json& j) const;
  void write_text(const std::string& name, const std::string& text) const;
  /// Absent file: nullopt; unreadable or invalid JSON: InputError naming the file.
  std::optional<nlohmann::json> read_json(const std::string& name) const;

  std::string checkpoint_path(int task) const;
  /// Records `task`'s checkpoint as the newest; with `keep_only_latest`, deletes the older one.
  void set_latest_checkpoint(int task, bool keep_only_latest) const;
  /// The newest checkpoint's task, if any.
  std::optional<int> latest_checkpoint() const;

 private:
  std::string path_;
  int lock_fd_ = -1;
};

}  // namespace clrun
