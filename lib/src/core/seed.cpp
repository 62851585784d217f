// Derived seeds (SplitMix64) and seeded torch generators.
#include "clrun/core/seed.hpp"

#include <ATen/CPUGeneratorImpl.h>

namespace clrun {

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
}  // namespace

uint64_t derive_seed(uint64_t seed, std::initializer_list<uint64_t> keys) {
  uint64_t h = splitmix64(seed);
  for (uint64_t k : keys) h = splitmix64(h ^ splitmix64(k + 0x632BE59BD9B4E019ULL));
  return h;
}

at::Generator make_generator(uint64_t seed, std::initializer_list<uint64_t> keys) {
  return at::make_generator<at::CPUGeneratorImpl>(derive_seed(seed, keys));
}

}  // namespace clrun
