// SIGINT / SIGTERM -> flag. The trainer polls the flag between steps and unwinds with Interrupted.
#include "clrun/core/interrupt.hpp"

#include <atomic>
#include <csignal>

namespace clrun {

namespace {
std::atomic<bool> g_interrupted{false};

extern "C" void on_signal(int sig) {
  g_interrupted.store(true);
  std::signal(sig, SIG_DFL);  // a second Ctrl-C (or SIGTERM) ends the process at once
}
}  // namespace

// SIGTERM (what Slurm and `kill` send before SIGKILL) is handled like Ctrl-C.
void install_interrupt_handler() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
bool interrupt_requested() { return g_interrupted.load(std::memory_order_relaxed); }
void request_interrupt() { g_interrupted.store(true); }
void clear_interrupt() { g_interrupted.store(false); }

}  // namespace clrun
