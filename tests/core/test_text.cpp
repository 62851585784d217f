// core/text: error messages as the CLI prints them.
#include <catch2/catch.hpp>

#include "clrun/core/text.hpp"

using namespace clrun;

TEST_CASE("errors print as one line plus at most one hint line", "[core]") {
  CHECK(one_line_error("x.yaml:1:1: seed: bad") == "x.yaml:1:1: seed: bad");
  CHECK(one_line_error("a: missing\nhint: install it") == "a: missing\nhint: install it");
  CHECK(one_line_error("first\n  second\r\nhint: h\nthird\nhint: again") == "first;   second; third; hint: again\nhint: h");
  CHECK(one_line_error(std::string("value 'a\tb\x1b[2J'") + "\n") == "value 'a b\\x1b[2J'");
  CHECK(one_line_error("") == "");
}
