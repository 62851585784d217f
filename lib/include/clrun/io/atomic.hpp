// Atomic file writes: write a temp file in the same directory, fsync, rename over the target.
// A reader (or a crash, or Ctrl-C) sees either the old file or the new one, never half of one.
#pragma once
#include <functional>
#include <string>

#include <torch/serialize/output-archive.h>

namespace clrun {

/// A failed write (full disk, I/O error) throws WriteError naming `path`; the previous version
/// of the file is kept and the temp file removed.
void write_file_atomic(const std::string& path, const std::string& content);

/// For writers that need a path (e.g. torch archives): `write(tmp_path)` then rename.
void write_atomic_with(const std::string& path, const std::function<void(const std::string& tmp)>& write);

/// Writes `archive` (a torch checkpoint) to `path` atomically. Write errors (a full disk) become a
/// WriteError here, not an abort inside torch's zip writer, which cannot report them safely.
void save_archive_atomic(const std::string& path, torch::serialize::OutputArchive& archive);

/// Temp files are named `<target>.tmp.<pid>`; true for such a name (left behind by a killed write).
bool is_temp_file_name(const std::string& filename);

/// Fault injection for tests: while set, a write whose target path makes `fault` return true
/// fails after its data is written, as on a full disk (ENOSPC). Pass nullptr to clear.
void set_write_fault(std::function<bool(const std::string& path)> fault);

std::string read_file(const std::string& path);

}  // namespace clrun
