// A disk cache of decoded (inflated) data files, so that a run does not inflate the same gzip
// IDX files again: entries live under $XDG_CACHE_HOME/clrun/data (default ~/.cache/clrun/data),
// one per source path, keyed by the source's canonical path, size and mtime, written atomically
// and checked (key, length, CRC-32) on every read. A stale or corrupt entry is ignored and
// rewritten; a cache that cannot be written only logs. CLRUN_DATA_CACHE=off disables it.
#pragma once
#include <optional>
#include <string>

#include <torch/types.h>

namespace clrun {

/// The cache directory from the environment: $CLRUN_DATA_CACHE_DIR if set, else
/// $XDG_CACHE_HOME/clrun/data, else $HOME/.cache/clrun/data; empty (no cache) when
/// CLRUN_DATA_CACHE is off/0/false or no directory can be derived.
std::string data_cache_dir();

/// What read_idx_cached did, for tests and logs.
enum class CacheOutcome { disabled, hit, miss, stale, corrupt };
const char* to_string(CacheOutcome outcome);

/// read_idx(path), through the cache in `cache_dir` (empty: no cache). Plain (not gzip) files are
/// read directly: caching them gains nothing. `outcome`, when given, receives what happened.
torch::Tensor read_idx_cached(const std::string& path, const std::string& cache_dir,
                              CacheOutcome* outcome = nullptr);

/// The entry file that caches `path` in `cache_dir` (it may not exist).
std::string data_cache_entry(const std::string& path, const std::string& cache_dir);

}  // namespace clrun
