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

TEST_CASE("UTF-8 validation", "[core]") {
  CHECK(is_valid_utf8(""));
  CHECK(is_valid_utf8("plain ascii"));
  CHECK(is_valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  CHECK_FALSE(is_valid_utf8("\xfe"));
  CHECK_FALSE(is_valid_utf8("\xc3"));              // truncated
  CHECK_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
  CHECK_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  CHECK_FALSE(is_valid_utf8("a\x80z"));            // stray continuation byte
}

TEST_CASE("glob patterns over parameter names", "[core]") {
  CHECK(clrun::glob_match("*", ""));
  CHECK(clrun::glob_match("*", "blocks.0.attn.qkv.weight"));
  CHECK(clrun::glob_match("blocks.*.attn.*", "blocks.11.attn.qkv.weight"));
  CHECK_FALSE(clrun::glob_match("blocks.*.attn.*", "blocks.11.mlp.fc1.weight"));
  CHECK(clrun::glob_match("*fc0", "layers.fc0"));
  CHECK_FALSE(clrun::glob_match("*fc0", "layers.fc0.weight"));
  CHECK(clrun::glob_match("a*b*c", "axxbyybzc"));
  CHECK_FALSE(clrun::glob_match("a*b*c", "axxbyybz"));
  CHECK(clrun::glob_match("head", "head"));
  CHECK_FALSE(clrun::glob_match("head", "heads"));
  CHECK(clrun::glob_match("a.b", "a.b"));
  CHECK_FALSE(clrun::glob_match("a.b", "axb"));  // '.' is literal
  CHECK(clrun::glob_match("**x", "x"));
}
