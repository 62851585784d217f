// Error types and their exit codes: bad input (2), runtime failure (1), interrupted (130).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace clrun {

/// Bad input: a config, an override, a data set path. The message is complete and names the
/// file, the key path and what was expected; `main` prints it once and exits with code 2.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file could not be written (full disk, I/O error); the previous version is kept. Exit code 1.
class WriteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The run was stopped by Ctrl-C after the last write finished; exit code 130.
class Interrupted : public std::runtime_error {
 public:
  Interrupted() : std::runtime_error("interrupted") {}
};

/// Training produced a non-finite loss; the run stops with status `diverged` (exit code 1).
class Diverged : public std::runtime_error {
 public:
  Diverged(int task_, int64_t epoch_, int64_t steps_)
      : std::runtime_error("training diverged (non-finite loss) in task " + std::to_string(task_) + ", epoch " +
                           std::to_string(epoch_) + ", by step " + std::to_string(steps_)),
        task(task_), epoch(epoch_), steps(steps_) {}
  int task;
  int64_t epoch, steps;  ///< the epoch whose loss sum was non-finite; optimizer steps taken in the task by then
};

namespace exit_code {
constexpr int ok = 0;
constexpr int failure = 1;
constexpr int bad_input = 2;
constexpr int interrupted = 130;
}  // namespace exit_code

}  // namespace clrun
