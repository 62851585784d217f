// The single Catch2 test binary's main.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
