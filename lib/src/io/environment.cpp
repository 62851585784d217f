// Environment facts for metrics.json and the run log.
#include "clrun/io/environment.hpp"

#include <dlfcn.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include <torch/torch.h>
#include <torch/version.h>

namespace clrun {

BlasInfo detect_blas() {
  BlasInfo info{"unknown", "", -1};
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    if (path.find("openblas") != std::string::npos) {
      info = {"openblas", path, -1};
      break;
    }
    if (path.find("libmkl") != std::string::npos) {
      info = {"mkl", path, -1};
      break;
    }
    if (path.find("/blas/libblas.so") != std::string::npos) info = {"reference", path, -1};
  }
  if (info.kind == "openblas") {
    using GetThreads = int (*)();
    if (auto fn = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads")))
      info.threads = fn();
  }
  return info;
}

bool set_blas_threads(int threads) {
  using SetThreads = void (*)(int);
  auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (fn) fn(threads);
  return fn != nullptr;
}

double process_age_seconds() {
  std::ifstream stat("/proc/self/stat"), uptime_file("/proc/uptime");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  double uptime = 0;
  uptime_file >> uptime;
  // field 22 (starttime, in clock ticks after boot) counts from the last ')' (the name may hold spaces)
  std::size_t close = content.rfind(')');
  if (close == std::string::npos || uptime <= 0) return 0;
  std::istringstream fields(content.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && (fields >> field); ++i) {
  }
  double started = std::stod(field) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return std::max(0.0, uptime - started);
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

nlohmann::json environment_json() {
  const BuildInfo& b = build_info();
  BlasInfo blas = detect_blas();
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return {
      {"clrun_version", b.clrun_version},
      {"git_commit", b.git_commit},
      {"versions",
       {{"libtorch", TORCH_VERSION},  // the headers compiled against
        {"yaml_cpp", b.yaml_cpp_version},
        {"spdlog", b.spdlog_version},
        {"nlohmann_json", b.nlohmann_json_version},
        {"cli11", b.cli11_version},
        {"compiler", b.compiler}}},
      {"blas", {{"kind", blas.kind}, {"path", blas.path}, {"threads", blas.threads}}},
      {"torch_threads", torch::get_num_threads()},
      {"torch_interop_threads", torch::get_num_interop_threads()},
      {"hardware_threads", std::thread::hardware_concurrency()},
      {"cuda_available", torch::cuda::is_available()},
      {"hostname", host},
  };
}

}  // namespace clrun
