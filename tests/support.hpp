// Test helpers: a tiny synthetic MNIST-format data set written by the tests themselves, temp
// directories, and a small experiment config over that data.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <filesystem>
#include <thread>
#include <vector>
#include <string>

#include <torch/torch.h>

#include "clrun/config/spec.hpp"
#include "clrun/core/error.hpp"
#include "clrun/core/interrupt.hpp"
#include "clrun/core/world.hpp"
#include "clrun/train/experiment.hpp"
#include "clrun/data/idx.hpp"
#include "clrun/models/model.hpp"
#include "clrun/streams/stream.hpp"

namespace clrun::test {

/// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("clrun_test_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::filesystem::path path_;
};

/// Writes a learnable 10-class data set of `size`x`size` images (size >= 11): class c is a
/// bright bar at row c + 1 plus noise. Train images are gzipped (the other files plain) so both paths are read.
inline void write_tiny_mnist(const std::string& dir, int64_t train_per_class = 20, int64_t test_per_class = 10,
                             int64_t size = 12) {
  torch::manual_seed(1234);
  auto make = [&](int64_t per_class) {
    int64_t n = per_class * 10;
    torch::Tensor labels = torch::arange(n, torch::kInt64).remainder(10);
    torch::Tensor images = torch::randint(0, 60, {n, size, size}, torch::kInt64);
    for (int64_t i = 0; i < n; ++i) {
      int64_t c = labels[i].item<int64_t>();
      images[i][c + 1].fill_(220);
    }
    return std::make_pair(images.to(torch::kUInt8), labels.to(torch::kUInt8));
  };
  auto [train_x, train_y] = make(train_per_class);
  auto [test_x, test_y] = make(test_per_class);
  write_idx(dir + "/train-images-idx3-ubyte.gz", train_x);
  write_idx(dir + "/train-labels-idx1-ubyte", train_y);
  write_idx(dir + "/t10k-images-idx3-ubyte", test_x);
  write_idx(dir + "/t10k-labels-idx1-ubyte", test_y);
}

/// A small class-IL experiment on the tiny data set in `data_dir`; `extra` YAML lines are
/// appended at the top level.
inline std::string tiny_config(const std::string& data_dir, const std::string& extra = "") {
  return "name: tiny\n"
         "seed: 3\n"
         "device: cpu\n"
         "stream: {name: split, dataset: {name: mnist, root: " + data_dir + "}, increment: 2, num_tasks: 3}\n"
         "backbone: {name: mlp, hidden: [32]}\n"
         "train: {epochs: 2, batch_size: 16, optimizer: {name: sgd, lr: 0.05, momentum: 0.9}}\n"
         "eval: {batch_size: 64}\n" + extra;
}

/// Fresh classifiers of the spec's backbone for `stream` (what the runner hands the Trainer).
inline ModelFactory model_factory(const ExperimentSpec& spec, const Stream& stream) {
  return clrun::model_factory(spec, stream, torch::kCPU);
}

/// Runs `spec` straight into dir/straight, then again into dir/resumed interrupted (as Ctrl-C
/// would) after `step` steps of task `task` and resumed; returns both metrics.json contents.
inline std::pair<nlohmann::json, nlohmann::json> run_interrupted_and_resumed(const ExperimentSpec& spec,
                                                                            const std::string& dir, int task,
                                                                            int64_t step) {
  RunOptions straight;
  straight.out_dir = dir + "/straight";
  nlohmann::json expected = run_experiment(spec, straight).metrics;
  RunOptions first;
  first.out_dir = dir + "/resumed";
  first.on_step = [task, step](int t, int64_t s) {
    if (t == task && s == step) request_interrupt();
  };
  bool interrupted = false;
  try {
    run_experiment(spec, first);
  } catch (const Interrupted&) {
    interrupted = true;
  }
  clear_interrupt();
  if (!interrupted) throw std::runtime_error("the run was not interrupted at task " + std::to_string(task));
  RunOptions again = first;
  again.on_step = nullptr;
  again.resume = true;
  return {expected, run_experiment(spec, again).metrics};
}

/// The tiny text benchmark shipped in tests/data/fixtures/text (scripts/make_text_fixtures.py):
/// its CL_Benchmark folder and its SentencePiece model (T5's id layout, 120 pieces).
inline std::string text_fixture(const std::string& name) {
  std::string here = __FILE__;
  return here.substr(0, here.find_last_of('/')) + "/data/fixtures/text/" + name;
}

/// A small text experiment (tiny T5, SST-2 then agnews of the tiny benchmark); `extra` YAML
/// lines are appended at the top level.
inline std::string tiny_text_config(const std::string& extra = "") {
  return "name: tiny_text\n"
         "seed: 5\n"
         "device: cpu\n"
         "stream: {name: sequence, dataset: {name: cl_benchmark, root: " + text_fixture("cl") +
         ", tokenizer: " + text_fixture("tiny_spm.model") + ", order: [SST-2, agnews]}}\n"
         "backbone: {name: t5, d_model: 32, d_ff: 32, d_kv: 4, num_heads: 2, num_layers: 1, num_decoder_layers: 1, "
         "vocab_size: 128, relative_attention_num_buckets: 8, relative_attention_max_distance: 16, dropout_rate: 0}\n"
         "train: {epochs: 2, batch_size: 4, grad_clip: 1.0, optimizer: {name: adamw, lr: 0.01, weight_decay: 0}}\n"
         "eval: {batch_size: 4, max_new_tokens: 6}\n" + extra;
}

/// The T5 data the repository must not hold (../shared/data/t5, or $CLRUN_SHARED_DATA/t5): empty
/// when absent, and the tests that need it only warn.
inline std::string shared_t5_file(const std::string& name) {
  const char* env = std::getenv("CLRUN_SHARED_DATA");
  std::string here = __FILE__;
  std::string root = env ? std::string(env) : here.substr(0, here.find_last_of('/')) + "/../../shared/data";
  std::string path = root + "/t5/" + name;
  return std::filesystem::exists(path) ? path : std::string();
}

/// A TCP port free on loopback a moment ago (data-parallel tests' rendezvous).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("no free port on 127.0.0.1");
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// Runs fn(config) for ranks 0..n-1 of one data-parallel world, one thread each, on loopback;
/// rethrows the first rank's exception after all have finished.
template <class Fn>
void run_ranks(int n, Fn fn, std::chrono::seconds timeout = std::chrono::seconds(30)) {
  const int port = free_port();
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        WorldConfig c;
        c.rank = c.local_rank = r;
        c.size = c.local_size = n;
        c.master_port = port;
        c.timeout = timeout;
        c.launcher = "test threads";
        fn(c);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

/// The Classifier behind a Model reference (tests look at its head).
inline Classifier& classifier(Model& model) { return dynamic_cast<Classifier&>(model); }

}  // namespace clrun::test
