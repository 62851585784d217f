// libFuzzer target: the path of `clrun validate CONFIG --set ...` from an in-memory buffer.
// Input: a YAML document, then up to 4 `key.path=value` override strings, each after a NUL byte.
// Project errors (InputError, ...) are expected; anything else escaping, a crash or a sanitizer
// report is a finding. Also checks that the resolved config (what a run writes as config.yaml)
// parses again to the same resolved config, as `clrun RUN_DIR/config.yaml` relies on.
// CLRUN_FUZZ_NO_ROUNDTRIP=1 drops the round-trip check.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "clrun/config/spec.hpp"
#include "clrun/core/error.hpp"
#include "clrun/train/experiment.hpp"

namespace {

std::vector<std::string> split(const std::string& s, char sep, std::size_t max_parts) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (parts.size() + 1 < max_parts) {
    std::size_t end = s.find(sep, start);
    if (end == std::string::npos) break;
    parts.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  parts.push_back(s.substr(start));
  return parts;
}

bool roundtrip_check() {
  static const bool on = std::getenv("CLRUN_FUZZ_NO_ROUNDTRIP") == nullptr;
  return on;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> parts = split(std::string(reinterpret_cast<const char*>(data), size), '\0', 5);
  try {
    std::vector<clrun::Override> overrides;
    for (std::size_t i = 1; i < parts.size(); ++i) overrides.push_back(clrun::parse_override(parts[i]));
    clrun::ExperimentSpec spec = clrun::parse_spec(parts[0], "fuzz.yaml", overrides);
    // what `clrun validate` prints, in both formats, and where the run would go
    const nlohmann::json resolved = spec.resolved();
    const std::string yaml = clrun::json_to_yaml(resolved);
    (void)resolved.dump(2);
    (void)clrun::default_run_dir(spec);
    if (roundtrip_check()) {
      nlohmann::json again;
      try {
        again = clrun::parse_spec(yaml, "config.yaml").resolved();
      } catch (const clrun::InputError& e) {
        std::fprintf(stderr, "resolved config does not parse again: %s\n--- resolved config.yaml:\n%s\n", e.what(),
                     yaml.c_str());
        std::abort();
      }
      if (again != resolved) {
        std::fprintf(stderr, "resolved config changes when parsed again:\n%s\n--- became:\n%s\n",
                     resolved.dump(2).c_str(), again.dump(2).c_str());
        std::abort();
      }
    }
  } catch (const clrun::InputError&) {
  }
  return 0;
}
