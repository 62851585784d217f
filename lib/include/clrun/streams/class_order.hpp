// Class orders: `identity`, an explicit list, or `{numpy_seed: N}`, which reproduces numpy's
// legacy np.random.seed(N); np.random.permutation(C) exactly (PyCIL, PILOT, RanPAC, FACIL).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clrun/core/config.hpp"

namespace clrun {

struct ClassOrder {
  enum class Kind { identity, list, numpy_seed };
  Kind kind = Kind::identity;
  std::vector<int64_t> list;  ///< Kind::list
  uint32_t seed = 0;          ///< Kind::numpy_seed

  /// order[k] = original label of the k-th class presented. Throws InputError (naming
  /// `key_path`) when a list is not a permutation of 0..num_classes-1.
  std::vector<int64_t> resolve(int64_t num_classes, const std::string& key_path) const;
};

/// numpy legacy RandomState(seed).permutation(n).
std::vector<int64_t> numpy_permutation(uint32_t seed, int64_t n);

void to_json(nlohmann::json& j, const ClassOrder& order);

template <>
struct Decoder<ClassOrder> {
  static ClassOrder decode(const ConfigNode& node);
};

}  // namespace clrun
