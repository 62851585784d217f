// The single Catch2 test binary's main.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <cstdlib>

// Runs in tests (and the clrun processes they start) never write the user's data cache
// (~/.cache/clrun); tests/data/test_data_cache.cpp tests the cache in temp directories.
static const int kNoUserDataCache = ::setenv("CLRUN_DATA_CACHE", "off", /*overwrite=*/0);
