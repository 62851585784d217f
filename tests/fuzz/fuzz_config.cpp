// libFuzzer target: the path of `clrun validate CONFIG --set ...` from an in-memory buffer.
// Input: a YAML document, then up to 4 `key.path=value` override strings, each after a NUL byte.
// Project errors (InputError, ...) are expected; anything else escaping, a crash or a sanitizer
// report is a finding. Also checks that the resolved config (what a run writes as config.yaml)
// parses again to the same resolved config, as `clrun RUN_DIR/config.yaml` relies on.
// CLRUN_FUZZ_SKIP_KNOWN=1 lets known findings (tests/fuzz/findings/, pending fixes in the config
// loader) pass, so that a run can look for new ones; CLRUN_FUZZ_NO_ROUNDTRIP=1 drops the check.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
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

bool skip_known() {
  static const bool on = std::getenv("CLRUN_FUZZ_SKIP_KNOWN") != nullptr;
  return on;
}

/// Known finding config_non_scalar_key.yaml: a map key that is not a scalar ({[a]: 1}) leaks a
/// YAML::BadConversion from ConfigNode::check_keys. True when `yaml` has such a key.
bool has_non_scalar_key(const std::string& yaml) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception&) {
    return false;
  }
  int budget = 100000;  // aliases can make the tree exponential
  std::function<bool(const YAML::Node&)> walk = [&](const YAML::Node& n) {
    if (--budget < 0) return false;
    if (n.IsSequence())
      for (const YAML::Node& c : n)
        if (walk(c)) return true;
    if (n.IsMap())
      for (const auto& kv : n)
        if (!kv.first.IsScalar() || walk(kv.first) || walk(kv.second)) return true;
    return false;
  };
  return walk(root);
}

bool roundtrip_check() {
  static const bool on = std::getenv("CLRUN_FUZZ_NO_ROUNDTRIP") == nullptr;
  return on;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::string> parts = split(std::string(reinterpret_cast<const char*>(data), size), '\0', 5);
  if (skip_known())
    for (std::size_t i = 0; i < parts.size(); ++i)
      if (has_non_scalar_key(i == 0 ? parts[i] : parts[i].substr(parts[i].find('=') + 1))) return 0;
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
  } catch (const nlohmann::json::type_error& e) {
    // known: config_invalid_utf8_name.yaml (a string that is not UTF-8 reaches the resolved JSON)
    if (!(skip_known() && e.id == 316)) throw;
  }
  return 0;
}
