// Atomic file writes: write a temp file in the same directory, fsync, rename over the target.
// A reader (or a crash, or Ctrl-C) sees either the old file or the new one, never half of one.
#pragma once
#include <functional>
#include <string>

namespace clrun {

void write_file_atomic(const std::string& path, const std::string& content);

/// For writers that need a path (e.g. torch archives): `write(tmp_path)` then rename.
void write_atomic_with(const std::string& path, const std::function<void(const std::string& tmp)>& write);

std::string read_file(const std::string& path);

}  // namespace clrun
