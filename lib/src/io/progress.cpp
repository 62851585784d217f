// Progress bar / periodic progress lines.
#include "clrun/io/progress.hpp"

#include <cstdio>

#include <spdlog/spdlog.h>

namespace clrun {

namespace {
std::string format_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof(buf), "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof(buf), "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof(buf), "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}
}  // namespace

Progress::Progress(bool bar, double log_every_seconds) : bar_(bar), log_every_(log_every_seconds) {}

void Progress::start(std::string label, int64_t total_steps) {
  label_ = std::move(label);
  total_ = total_steps;
  started_ = std::chrono::steady_clock::now();
  next_draw_ = started_ + std::chrono::milliseconds(bar_ ? 200 : static_cast<int64_t>(log_every_ * 1000));
  drawn_ = false;
}

void Progress::draw(std::chrono::steady_clock::time_point now, int64_t steps, int64_t samples) {
  double elapsed = std::chrono::duration<double>(now - started_).count();
  double rate = elapsed > 0 ? static_cast<double>(samples) / elapsed : 0.0;
  double frac = total_ > 0 ? static_cast<double>(steps) / static_cast<double>(total_) : 0.0;
  double eta = steps > 0 ? elapsed * (static_cast<double>(total_ - steps) / static_cast<double>(steps)) : 0.0;
  if (bar_) {
    constexpr int width = 30;
    int filled = static_cast<int>(frac * width);
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %3.0f%% %lld/%lld steps  %.0f samples/s  ETA %s   ", label_.c_str(), bar.c_str(),
                 100 * frac, static_cast<long long>(steps), static_cast<long long>(total_), rate, format_duration(eta).c_str());
    std::fflush(stderr);
    drawn_ = true;
    next_draw_ = now + std::chrono::milliseconds(100);
  } else {
    spdlog::info("{}: step {}/{} ({:.0f}%), {:.0f} samples/s, ETA {}", label_, steps, total_, 100 * frac, rate,
                 format_duration(eta));
    next_draw_ = now + std::chrono::milliseconds(static_cast<int64_t>(log_every_ * 1000));
  }
}

void Progress::finish() {
  if (bar_ && drawn_) {
    std::fprintf(stderr, "\r%*s\r", 110, "");
    std::fflush(stderr);
  }
  drawn_ = false;
}

}  // namespace clrun
