// What a run records about where it ran: versions, BLAS, threads, memory.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace clrun {

struct BuildInfo {
  std::string clrun_version, git_commit, yaml_cpp_version, spdlog_version,
      nlohmann_json_version, cli11_version, compiler;
};
/// Generated at build time (cmake/build_info.cmake).
const BuildInfo& build_info();

/// Which BLAS the process loaded: "openblas", "mkl", "reference" or "unknown", with its path.
struct BlasInfo {
  std::string kind, path;
  int threads = -1;  ///< OpenBLAS's own thread count, -1 when not OpenBLAS
};
BlasInfo detect_blas();
/// Sets OpenBLAS's thread count (LibTorch's set_num_threads does not); false without OpenBLAS.
bool set_blas_threads(int threads);

/// Seconds since this process started (from /proc; 0 if unavailable), so that startup figures
/// include loading the shared libraries, not just the time since main().
double process_age_seconds();

/// Peak resident set size of this process in MiB.
double peak_rss_mib();

/// versions, BLAS, threads, host: the `environment` block of metrics.json.
nlohmann::json environment_json();

}  // namespace clrun
