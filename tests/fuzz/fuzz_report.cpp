// libFuzzer target: the JSON readers behind `clrun report` (and `--resume`'s RunDir::read_json).
// Input: up to three metrics.json files separated by NUL bytes, written as runs a/, b/, c/ of a
// per-process temp folder; then the whole report is built and formatted as `clrun report
// FOLDER --matrix FOLDER/a` does (without running gnuplot). InputError is expected; anything
// else is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "clrun/core/error.hpp"
#include "clrun/io/report.hpp"
#include "clrun/io/run_dir.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path& folder() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("clrun_fuzz_report_" + std::to_string(::getpid()));
    fs::remove_all(d);
    for (const char* run : {"a", "b", "c"}) fs::create_directories(d / run);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(folder(), ec);
    });
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const fs::path& dir = folder();
  std::size_t start = 0;
  for (const char* run : {"a", "b", "c"}) {
    const fs::path file = dir / run / "metrics.json";
    if (start > input.size()) {
      fs::remove(file);
      continue;
    }
    std::size_t end = std::min(input.find('\0', start), input.size());
    std::ofstream(file, std::ios::binary | std::ios::trunc) << input.substr(start, end - start);
    start = end + 1;
  }
  try {
    (void)clrun::RunDir((dir / "a").string()).read_json("metrics.json");
  } catch (const clrun::InputError&) {
  }
  try {
    (void)clrun::accuracy_matrices_markdown((dir / "a").string());
  } catch (const clrun::InputError&) {
  }
  try {
    const clrun::Report report = clrun::build_report(clrun::load_runs({dir.string()}));
    (void)clrun::report_markdown(report);
    (void)clrun::report_csv(report);
    (void)clrun::curve_data(report);
    (void)clrun::curve_script(report, (dir / "plot").string());
  } catch (const clrun::InputError&) {
  }
  return 0;
}
