// Class orders, including numpy's legacy permutation (MT19937 + bounded Fisher-Yates).
#include "clrun/streams/class_order.hpp"

#include <algorithm>
#include <numeric>
#include <random>

namespace clrun {

std::vector<int64_t> numpy_permutation(uint32_t seed, int64_t n) {
  // np.random.seed(int) seeds MT19937 with init_genrand, exactly as std::mt19937(seed) does.
  std::mt19937 mt(seed);
  std::vector<int64_t> a(n);
  std::iota(a.begin(), a.end(), 0);
  // RandomState.shuffle: for i = n-1..1, j = random_interval(i) (mask rejection on 32-bit draws).
  for (int64_t i = n - 1; i > 0; --i) {
    uint64_t max = static_cast<uint64_t>(i), mask = max;
    for (int s = 1; s <= 32; s <<= 1) mask |= mask >> s;
    uint64_t j;
    do {
      j = static_cast<uint64_t>(mt()) & mask;
    } while (j > max);
    std::swap(a[i], a[static_cast<int64_t>(j)]);
  }
  return a;
}

std::vector<int64_t> ClassOrder::resolve(int64_t num_classes, const std::string& key_path) const {
  switch (kind) {
    case Kind::identity: {
      std::vector<int64_t> order(num_classes);
      std::iota(order.begin(), order.end(), 0);
      return order;
    }
    case Kind::numpy_seed:
      return numpy_permutation(seed, num_classes);
    case Kind::list: {
      std::vector<int64_t> sorted = list;
      std::sort(sorted.begin(), sorted.end());
      bool ok = static_cast<int64_t>(sorted.size()) == num_classes;
      for (int64_t i = 0; ok && i < num_classes; ++i) ok = sorted[i] == i;
      if (!ok)
        throw InputError(key_path + ": the list must be a permutation of 0.." + std::to_string(num_classes - 1) +
                         " (the data set has " + std::to_string(num_classes) + " classes), got " +
                         nlohmann::json(list).dump());
      return list;
    }
  }
  return {};
}

void to_json(nlohmann::json& j, const ClassOrder& order) {
  switch (order.kind) {
    case ClassOrder::Kind::identity: j = "identity"; break;
    case ClassOrder::Kind::list: j = order.list; break;
    case ClassOrder::Kind::numpy_seed: j = {{"numpy_seed", order.seed}}; break;
  }
}

ClassOrder Decoder<ClassOrder>::decode(const ConfigNode& node) {
  ClassOrder order;
  const YAML::Node& y = node.yaml();
  if (y.IsScalar()) {
    if (y.Scalar() != "identity") node.fail("expected identity, a list of classes or {numpy_seed: N}, got '" + y.Scalar() + "'");
  } else if (y.IsSequence()) {
    order.kind = ClassOrder::Kind::list;
    order.list = clrun::decode<std::vector<int64_t>>(node);
  } else {
    node.check_keys({"numpy_seed"});
    ConfigNode seed = node.child("numpy_seed");
    if (!seed.present()) node.fail("expected {numpy_seed: N}");
    int64_t s = clrun::decode<int64_t>(seed);
    if (s < 0 || s > 0xFFFFFFFFLL) seed.fail(std::to_string(s) + " is out of range: numpy seeds are 0..2^32-1");
    order.kind = ClassOrder::Kind::numpy_seed;
    order.seed = static_cast<uint32_t>(s);
  }
  return order;
}

}  // namespace clrun
