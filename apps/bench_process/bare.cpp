// clrun_bare_process: the bare LibTorch program that scripts/bench_process times, as a whole
// process, against `clrun configs/finetune_split_fmnist.yaml`. It is what a careful user writes
// by hand for the same run, linking only LibTorch and zlib: read the four gzip IDX files
// (zlib's gzread), keep each split in one uint8 tensor, train the MLP 784-400-400-10 on the five
// 2-class tasks (SGD lr 0.01 momentum 0.9, batch 128, 2 epochs, a fresh optimizer per task,
// reshuffled every epoch, loss over all logits) and evaluate every task after each task in
// no-grad batches of 1000 (class-IL: argmax over the classes seen so far). Unlike clrun it writes
// nothing, does not score the untrained model and checks nothing.
// Usage: clrun_bare_process [DATA_DIR] [--epochs N] [--tasks N]
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace {

torch::Tensor read_idx_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open");
  gzbuffer(f, 1 << 20);
  unsigned char head[4];
  if (gzread(f, head, 4) != 4) throw std::runtime_error(path + ": truncated");
  const int rank = head[3];
  std::vector<int64_t> dims(rank);
  int64_t count = 1;
  for (int d = 0; d < rank; ++d) {
    unsigned char b[4];
    if (gzread(f, b, 4) != 4) throw std::runtime_error(path + ": truncated");
    dims[d] = (int64_t(b[0]) << 24) | (int64_t(b[1]) << 16) | (int64_t(b[2]) << 8) | int64_t(b[3]);
    count *= dims[d];
  }
  torch::Tensor t = torch::empty(dims, torch::kUInt8);
  auto* dst = t.data_ptr<uint8_t>();
  for (int64_t got = 0; got < count;) {
    int n = gzread(f, dst + got, static_cast<unsigned>(std::min<int64_t>(count - got, 1 << 30)));
    if (n <= 0) throw std::runtime_error(path + ": truncated");
    got += n;
  }
  gzclose(f);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const auto start = std::chrono::steady_clock::now();
  std::string root = "/usr/share/datasets/fashion-mnist";
  int epochs = 2, num_tasks = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--epochs" && i + 1 < argc) epochs = std::atoi(argv[++i]);
    else if (a == "--tasks" && i + 1 < argc) num_tasks = std::atoi(argv[++i]);
    else root = a;
  }
  torch::manual_seed(0);
  torch::Tensor train_x = read_idx_gz(root + "/train-images-idx3-ubyte.gz").view({-1, 784});
  torch::Tensor train_y = read_idx_gz(root + "/train-labels-idx1-ubyte.gz").to(torch::kInt64);
  torch::Tensor test_x = read_idx_gz(root + "/t10k-images-idx3-ubyte.gz").view({-1, 784});
  torch::Tensor test_y = read_idx_gz(root + "/t10k-labels-idx1-ubyte.gz").to(torch::kInt64);
  const float scale = 1.0f / (255.0f * 0.3530f), shift = -0.2860f / 0.3530f;
  auto prepare = [&](const torch::Tensor& raw) { return raw.to(torch::kFloat32).mul_(scale).add_(shift); };

  torch::nn::Sequential model(torch::nn::Linear(784, 400), torch::nn::ReLU(), torch::nn::Linear(400, 400),
                              torch::nn::ReLU(), torch::nn::Linear(400, 10));
  std::vector<torch::Tensor> train_rows, test_rows;
  for (int t = 0; t < num_tasks; ++t) {
    auto in_task = [&](const torch::Tensor& y) { return y.ge(2 * t).logical_and(y.lt(2 * t + 2)).nonzero().view(-1); };
    train_rows.push_back(in_task(train_y));
    test_rows.push_back(in_task(test_y));
  }
  std::vector<std::vector<double>> accuracy;
  int64_t samples = 0;
  for (int t = 0; t < num_tasks; ++t) {
    model->train();
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    const torch::Tensor& rows = train_rows[t];
    const int64_t n = rows.size(0);
    for (int e = 0; e < epochs; ++e) {
      torch::Tensor order = rows.index_select(0, torch::randperm(n, torch::kInt64));
      for (int64_t s = 0; s < n; s += 128) {
        torch::Tensor idx = order.slice(0, s, std::min(n, s + 128));
        torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(prepare(train_x.index_select(0, idx))),
                                                                  train_y.index_select(0, idx));
        opt.zero_grad();
        loss.backward();
        opt.step();
        samples += idx.size(0);
      }
    }
    torch::NoGradGuard no_grad;
    model->eval();
    std::vector<double> row;
    for (int i = 0; i < num_tasks; ++i) {
      torch::Tensor m = torch::full({10}, -1e30f);
      m.slice(0, 0, 2 * (std::max(t, i) + 1)).zero_();  // seen classes, future tasks over their own
      const torch::Tensor& r = test_rows[i];
      torch::Tensor correct = torch::zeros({}, torch::kInt64);
      for (int64_t s = 0; s < r.size(0); s += 1000) {
        torch::Tensor idx = r.slice(0, s, std::min(r.size(0), s + 1000));
        correct += (model->forward(prepare(test_x.index_select(0, idx))) + m).argmax(1).eq(test_y.index_select(0, idx)).sum();
      }
      row.push_back(100.0 * correct.item<int64_t>() / r.size(0));
    }
    accuracy.push_back(row);
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"program\": \"bare\", \"samples\": %lld, \"seconds_in_main\": %.3f, \"final_row\": [",
              static_cast<long long>(samples), wall);
  for (int i = 0; i < num_tasks; ++i) std::printf("%s%.2f", i ? ", " : "", accuracy.back()[i]);
  std::printf("]}\n");
  return 0;
}
