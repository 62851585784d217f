// Seeding: every random stream in a run is derived from the run seed and a purpose, so a
// resumed run draws exactly what an uninterrupted one would.
#pragma once
#include <cstdint>
#include <initializer_list>

#include <ATen/core/Generator.h>

namespace clrun {

/// SplitMix64 of the seed mixed with each key in turn: decorrelated 64-bit sub-seeds.
uint64_t derive_seed(uint64_t seed, std::initializer_list<uint64_t> keys);

/// A CPU torch generator seeded with derive_seed(seed, keys).
at::Generator make_generator(uint64_t seed, std::initializer_list<uint64_t> keys);

/// Purposes for derive_seed, one constant each so streams never collide.
namespace seed_purpose {
constexpr uint64_t shuffle = 1;
constexpr uint64_t permutation = 2;
constexpr uint64_t model_init = 3;
constexpr uint64_t strategy = 4;
constexpr uint64_t validation = 5;
constexpr uint64_t train_transform = 10;  ///< random image transforms: (seed, purpose, task, epoch, batch)
constexpr uint64_t sotu_mask = 20;          ///< SoTU's masks: (seed, purpose, task, tensor)
constexpr uint64_t random_projection = 21;  ///< RanPAC's W_rand
constexpr uint64_t rehearsal_rows = 22;     ///< cumulative's past_fraction subsets: (seed, purpose, task)
}  // namespace seed_purpose

}  // namespace clrun
