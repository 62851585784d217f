// `clrun --nproc N CONFIG ...`: starts N copies of this clrun on this machine with the variables
// torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free
// MASTER_PORT), waits for them and returns the first failing rank's exit code.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "clrun/core/error.hpp"
#include "commands.hpp"

extern char** environ;

namespace clrun::app {

namespace {

std::vector<pid_t> g_children;

/// SIGTERM (kill, Slurm) is passed on to every rank, which stops at a step boundary as on Ctrl-C.
/// SIGINT is not: a terminal's Ctrl-C reaches the ranks itself (same process group), and a
/// second copy would end them at once.
extern "C" void forward_signal(int sig) {
  for (pid_t pid : g_children) ::kill(pid, sig);
}

/// A TCP port that was free on loopback a moment ago (rank 0's store binds it right after).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error(std::string("--nproc: no free TCP port on 127.0.0.1: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return exit_code::failure;
}

}  // namespace

int launch_ranks(int nproc, const std::vector<std::string>& args, std::chrono::seconds timeout) {
  if (std::getenv("WORLD_SIZE") || std::getenv("SLURM_STEP_NUM_TASKS"))
    spdlog::warn("--nproc {}: ignoring the WORLD_SIZE / srun variables of this environment for the ranks it starts", nproc);
  const std::string port = std::to_string(free_port());
  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (key == "RANK" || key == "WORLD_SIZE" || key == "LOCAL_RANK" || key == "LOCAL_WORLD_SIZE" ||
        key == "MASTER_ADDR" || key == "MASTER_PORT" || key == "CLRUN_LAUNCHER" || key.rfind("SLURM_STEP_", 0) == 0)
      continue;
    base_env.push_back(kv);
  }
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGTERM, forward_signal);
  spdlog::info("--nproc {}: starting {} ranks (rendezvous 127.0.0.1:{}); rank 0 logs and writes the run", nproc, nproc, port);
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env = base_env;
    for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"RANK", std::to_string(r)}, {"WORLD_SIZE", std::to_string(nproc)}, {"LOCAL_RANK", std::to_string(r)},
             {"LOCAL_WORLD_SIZE", std::to_string(nproc)}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port},
             {"CLRUN_LAUNCHER", "clrun --nproc"}, {"CLRUN_DIST_TIMEOUT", std::to_string(timeout.count())}})
      env.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& kv : env) envp.push_back(kv.data());
    envp.push_back(nullptr);
    // The ranks get the default SIGINT action back (posix_spawn keeps ignored signals ignored).
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, "/proc/self/exe", nullptr, &attr, argv.data(), envp.data());
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      forward_signal(SIGKILL);
      throw std::runtime_error("--nproc: could not start rank " + std::to_string(r) + ": " + std::strerror(rc));
    }
    g_children.push_back(pid);
  }

  // Wait for every rank. Once one fails the others fail at their next collective; any still
  // running after the collective timeout (and a grace period) is killed.
  int result = exit_code::ok;
  std::size_t running = g_children.size();
  std::optional<std::chrono::steady_clock::time_point> deadline;
  std::vector<bool> done(g_children.size(), false);
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (std::size_t r = 0; r < g_children.size(); ++r) {
        if (g_children[r] != pid) continue;
        done[r] = true;
        --running;
        const int code = exit_code_of(status);
        if (code != exit_code::ok) {
          if (result == exit_code::ok) result = code;
          spdlog::log(code == exit_code::interrupted ? spdlog::level::warn : spdlog::level::err,
                      "--nproc: rank {} exited with code {}", r, code);
          if (!deadline) deadline = std::chrono::steady_clock::now() + timeout + std::chrono::seconds(30);
        }
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;
    if (deadline && std::chrono::steady_clock::now() > *deadline) {
      for (std::size_t r = 0; r < g_children.size(); ++r)
        if (!done[r]) {
          spdlog::error("--nproc: rank {} still runs after another failed; killing it", r);
          ::kill(g_children[r], SIGKILL);
        }
      deadline.reset();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  g_children.clear();
  return result;
}

}  // namespace clrun::app
