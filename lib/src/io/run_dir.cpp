// Run directory layout and atomic writes.
#include "clrun/io/run_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "clrun/core/error.hpp"
#include "clrun/io/atomic.hpp"

namespace clrun {

namespace fs = std::filesystem;

namespace {
const char* const kLockFile = ".lock";

void create_directories(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec || !fs::is_directory(path))
    throw InputError(path + ": cannot create the run directory (" +
                     (ec ? ec.message() : std::string("a file is in the way")) +
                     "); choose another output.dir or --out");
}

std::string host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? name : "?";
}
}  // namespace

RunDir::RunDir(std::string path) : path_(std::move(path)) {}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock; the file stays, harmlessly
}

bool RunDir::exists() const { return fs::exists(path_); }

void RunDir::create() const { create_directories(path_ + "/checkpoints"); }

void RunDir::lock() {
  if (lock_fd_ >= 0) return;
  create_directories(path_);
  const std::string lock_path = file(kLockFile);
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    throw InputError(lock_path + ": cannot create the run directory's lock file (" + std::strerror(errno) +
                     "); choose another output.dir or --out");
  std::string holder;
  try {
    holder = read_file(lock_path);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
  } catch (const std::exception&) {
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    throw InputError(path_ + " is in use by another clrun (" + (holder.empty() ? "pid unknown" : holder) +
                     "); wait for it to finish or stop it, or use --out DIR for a new run directory");
  }
  // flock dies with its process, so a lock file whose lock is free was left by a killed run.
  if (!holder.empty()) spdlog::info("{}: stale lock of a stopped run ({}) taken over", lock_path, holder);
  std::string me = "pid " + std::to_string(::getpid()) + " on " + host_name() + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    spdlog::warn("{}: cannot record the pid in the lock file ({})", lock_path, std::strerror(errno));
  lock_fd_ = fd;
}

bool RunDir::empty_but_lock() const {
  for (const auto& entry : fs::directory_iterator(path_))
    if (entry.path().filename() != kLockFile) return false;
  return true;
}

void RunDir::clear() const {
  for (const auto& entry : fs::directory_iterator(path_))
    if (entry.path().filename() != kLockFile) fs::remove_all(entry.path());
}

int RunDir::remove_stale_temp_files() const {
  int removed = 0;
  for (const std::string& sub : {path_, path_ + "/checkpoints"}) {
    std::error_code ec;
    if (!fs::is_directory(sub, ec)) continue;
    for (const auto& entry : fs::directory_iterator(sub, ec))
      if (entry.is_regular_file() && is_temp_file_name(entry.path().filename().string()) &&
          fs::remove(entry.path(), ec))
        ++removed;
  }
  return removed;
}

void RunDir::write_json(const std::string& name, const nlohmann::json& j) const {
  write_file_atomic(file(name), j.dump(2) + "\n");
}

void RunDir::write_text(const std::string& name, const std::string& text) const { write_file_atomic(file(name), text); }

std::optional<nlohmann::json> RunDir::read_json(const std::string& name) const {
  if (!fs::exists(file(name))) return std::nullopt;
  try {
    return nlohmann::json::parse(read_file(file(name)));
  } catch (const std::exception& e) {
    throw InputError(file(name) + ": unreadable or not valid JSON (" + std::string(e.what()) +
                     "); the directory holds a damaged run: --overwrite replaces it, --out DIR starts elsewhere");
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
