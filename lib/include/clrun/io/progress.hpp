// Training progress: a redrawn bar with rate and ETA when stderr is a terminal, plain log lines
// every few seconds otherwise. update() is called every step and only reads the clock.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace clrun {

class Progress {
 public:
  /// `bar`: draw a terminal bar; otherwise log a line every `log_every_seconds`.
  explicit Progress(bool bar, double log_every_seconds = 10.0);
  void start(std::string label, int64_t total_steps);
  /// True when it drew (at most every 100 ms): the caller's cue for its own periodic checks.
  bool update(int64_t steps_done, int64_t samples_done) {
    auto now = std::chrono::steady_clock::now();
    if (now < next_draw_) return false;
    draw(now, steps_done, samples_done);
    return true;
  }
  /// Clears the bar line (before other output) and ends the current task's display.
  void finish();

 private:
  void draw(std::chrono::steady_clock::time_point now, int64_t steps, int64_t samples);
  bool bar_;
  double log_every_;
  std::string label_;
  int64_t total_ = 0;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point started_, next_draw_;
};

}  // namespace clrun
