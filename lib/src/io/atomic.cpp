// Atomic writes (temp + fsync + rename).
#include "clrun/io/atomic.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include <c10/util/Exception.h>

#include "clrun/core/error.hpp"

namespace clrun {

namespace {
const std::string kTempMarker = ".tmp.";

std::function<bool(const std::string&)>& write_fault() {
  static std::function<bool(const std::string&)> fault;
  return fault;
}

std::string temp_path_for(const std::string& path) { return path + kTempMarker + std::to_string(::getpid()); }

/// Data must be on disk before the rename makes it the file: a full disk often shows only here.
void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open for fsync");
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) throw std::system_error(err, std::generic_category(), "fsync");
}
}  // namespace

void set_write_fault(std::function<bool(const std::string& path)> fault) { write_fault() = std::move(fault); }

bool is_temp_file_name(const std::string& filename) {
  std::size_t at = filename.rfind(kTempMarker);
  if (at == std::string::npos || at == 0 || at + kTempMarker.size() == filename.size()) return false;
  for (std::size_t i = at + kTempMarker.size(); i < filename.size(); ++i)
    if (filename[i] < '0' || filename[i] > '9') return false;
  return true;
}

void write_atomic_with(const std::string& path, const std::function<void(const std::string&)>& write) {
  std::string tmp = temp_path_for(path);
  try {
    write(tmp);
    if (write_fault() && write_fault()(path)) throw std::system_error(ENOSPC, std::generic_category());
    fsync_path(tmp);
    std::filesystem::rename(tmp, path);
  } catch (const std::exception& e) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    const auto* torch_error = dynamic_cast<const c10::Error*>(&e);  // its what() has a stack trace
    std::string reason = torch_error ? torch_error->what_without_backtrace() : e.what();
    if (auto nl = reason.find('\n'); nl != std::string::npos) reason.resize(nl);
    throw WriteError(path + ": cannot write (" + reason + "); its previous version, if any, is kept");
  }
}

void write_file_atomic(const std::string& path, const std::string& content) {
  write_atomic_with(path, [&](const std::string& tmp) {
    errno = 0;
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) throw std::system_error(errno ? errno : EIO, std::generic_category());
  });
}

void save_archive_atomic(const std::string& path, torch::serialize::OutputArchive& archive) {
  write_atomic_with(path, [&](const std::string& tmp) {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw std::system_error(errno, std::generic_category());
    // torch's zip writer aborts the process (from a destructor) when told of a short write, so it
    // is never told: the first error is kept, later bytes are dropped, and we throw afterwards.
    int error = 0;
    archive.save_to([&](const void* data, std::size_t n) -> std::size_t {
      if (!error && n > 0 && std::fwrite(data, 1, n, f) != n) error = errno ? errno : EIO;  // (null, 0) happens
      return n;
    });
    if (std::fclose(f) != 0 && !error) error = errno ? errno : EIO;
    if (error) throw std::system_error(error, std::generic_category());
  });
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace clrun
