// Error types and their exit codes: bad input (2), runtime failure (1), interrupted (130).
#pragma once
#include <stdexcept>
#include <string>

namespace clrun {

/// Bad input: a config, an override, a data set path. The message is complete and names the
/// file, the key path and what was expected; `main` prints it once and exits with code 2.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The run was stopped by Ctrl-C after the last write finished; exit code 130.
class Interrupted : public std::runtime_error {
 public:
  Interrupted() : std::runtime_error("interrupted") {}
};

namespace exit_code {
constexpr int ok = 0;
constexpr int failure = 1;
constexpr int bad_input = 2;
constexpr int interrupted = 130;
}  // namespace exit_code

}  // namespace clrun
