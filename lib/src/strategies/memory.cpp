// Replay memory: reservoir and class-balanced insertion, uniform sampling, checkpointing.
#include "clrun/strategies/memory.hpp"

#include <algorithm>
#include <map>
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "clrun/strategies/strategy.hpp"

namespace clrun {

ReplayMemory::Policy memory_policy(const std::string& name) {
  return name == "class_balanced" ? ReplayMemory::Policy::class_balanced : ReplayMemory::Policy::reservoir;
}

int64_t uniform_index(at::Generator& gen, int64_t n) {
  auto* impl = at::check_generator<at::CPUGeneratorImpl>(gen);
  std::lock_guard<std::mutex> lock(impl->mutex_);
  return static_cast<int64_t>(impl->random64() % static_cast<uint64_t>(n));
}

void ReplayMemory::allocate(const torch::Tensor& rows, const torch::Tensor& logits) {
  rows_ = torch::zeros({capacity_}, rows.options());
  labels_ = torch::zeros({capacity_}, rows.options());
  task_ids_ = torch::zeros({capacity_}, rows.options());
  if (logits.defined()) logits_ = torch::zeros({capacity_, logits.size(1)}, logits.options());
}

int64_t ReplayMemory::choose_slot(int64_t label, at::Generator& gen) {
  if (label >= static_cast<int64_t>(seen_per_class_.size())) seen_per_class_.resize(label + 1, 0);
  const int64_t seen_label = seen_per_class_[label]++;
  const int64_t seen = seen_++;
  if (filled_ < capacity_) return filled_++;
  if (policy_ == Policy::reservoir) {
    // Mammoth's reservoir: the n-th sample (0-based) replaces a random slot with probability M/(n+1).
    const int64_t r = uniform_index(gen, seen + 1);
    return r < capacity_ ? r : -1;
  }
  std::map<int64_t, std::vector<int64_t>> slots;
  for (int64_t s = 0; s < capacity_; ++s) slots[slot_labels_[s]].push_back(s);
  std::size_t largest = 0;
  for (const auto& kv : slots) largest = std::max(largest, kv.second.size());
  auto own = slots.find(label);
  if (own != slots.end() && own->second.size() == largest) {
    // Already a largest class: keep a uniform sample of this class (per-class reservoir).
    const int64_t r = uniform_index(gen, seen_label + 1);
    return r < static_cast<int64_t>(largest) ? own->second[r] : -1;
  }
  // Another class is larger: it gives up a random one of its slots (the first largest by label).
  for (const auto& kv : slots)
    if (kv.second.size() == largest) return kv.second[uniform_index(gen, static_cast<int64_t>(largest))];
  return -1;
}

void ReplayMemory::add(const Stream& stream, const Batch& current, const torch::Tensor& logits, int task,
                       at::Generator& gen) {
  torch::NoGradGuard no_grad;
  const int64_t n = current.size();
  if (n == 0 || capacity_ == 0) return;
  if (!rows_.defined()) allocate(current.index, logits);
  if (policy_ == Policy::class_balanced && slot_labels_.empty()) slot_labels_.assign(capacity_, -1);
  // Host-side labels: a device sync only for the class-balanced policy, which must count classes.
  torch::Tensor labels_host =
      policy_ == Policy::class_balanced ? stream.train.labels.index_select(0, current.index.to(stream.train.labels.device())).cpu()
                                        : torch::Tensor();
  std::map<int64_t, int64_t> slot_to_row;  // later rows win a slot chosen twice in one batch
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = labels_host.defined() ? labels_host[i].item<int64_t>() : 0;
    const int64_t slot = choose_slot(label, gen);
    if (slot < 0) continue;
    slot_to_row[slot] = i;
    if (policy_ == Policy::class_balanced) slot_labels_[slot] = label;
  }
  if (slot_to_row.empty()) return;
  std::vector<int64_t> slots, rows;
  for (const auto& [s, r] : slot_to_row) slots.push_back(s), rows.push_back(r);
  const auto device = rows_.device();
  torch::Tensor slot_t = torch::tensor(slots, torch::kInt64).to(device), row_t = torch::tensor(rows, torch::kInt64).to(device);
  torch::Tensor added = current.index.index_select(0, row_t);
  rows_.index_copy_(0, slot_t, added);
  labels_.index_copy_(0, slot_t, stream.train.labels.index_select(0, added.to(stream.train.labels.device())).to(device));
  task_ids_.index_copy_(0, slot_t, current.task_ids.index_select(0, row_t));
  if (logits_.defined()) logits_.index_copy_(0, slot_t, logits.detach().index_select(0, row_t).to(logits_.dtype()));
  if (std::find(tasks_.begin(), tasks_.end(), task) == tasks_.end()) tasks_.push_back(task);
}

Batch ReplayMemory::sample(const Stream& stream, int64_t n, at::Generator& gen) const {
  n = std::min(n, filled_);
  torch::Tensor pick = torch::randperm(filled_, gen, torch::kInt64).slice(0, 0, n).to(rows_.device());
  Batch b = stream.make_batch(stream.train, rows_.index_select(0, pick), task_ids_.index_select(0, pick), tasks_);
  b.index = torch::Tensor();  // memory rows are not rows of the current batch's training set
  if (logits_.defined()) b.extra["logits"] = logits_.index_select(0, pick);
  return b;
}

std::vector<int64_t> ReplayMemory::class_counts() const {
  if (filled_ == 0) return {};
  torch::Tensor t = labels_.slice(0, 0, filled_).cpu();
  std::vector<int64_t> counts(t.max().item<int64_t>() + 1, 0);
  for (int64_t i = 0; i < filled_; ++i) ++counts[t[i].item<int64_t>()];
  return counts;
}

void ReplayMemory::save(torch::serialize::OutputArchive& archive) const {
  archive.write("filled", c10::IValue(filled_));
  archive.write("seen", c10::IValue(seen_));
  write_tensors(archive, "tensors", {rows_, labels_, task_ids_, logits_});
  archive.write("slot_labels", torch::tensor(slot_labels_, torch::kInt64));
  archive.write("seen_per_class", torch::tensor(seen_per_class_, torch::kInt64));
  archive.write("tasks", torch::tensor(std::vector<int64_t>(tasks_.begin(), tasks_.end()), torch::kInt64));
}

void ReplayMemory::load(torch::serialize::InputArchive& archive, torch::Device device) {
  c10::IValue v;
  archive.read("filled", v);
  filled_ = v.toInt();
  archive.read("seen", v);
  seen_ = v.toInt();
  auto tensors = read_tensors(archive, "tensors", device);
  rows_ = tensors.at(0), labels_ = tensors.at(1), task_ids_ = tensors.at(2), logits_ = tensors.at(3);
  auto read_vector = [&](const char* key) {
    torch::Tensor t;
    archive.read(key, t);
    t = t.to(torch::kCPU).contiguous();
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  };
  slot_labels_ = read_vector("slot_labels");
  seen_per_class_ = read_vector("seen_per_class");
  auto tasks = read_vector("tasks");
  tasks_.assign(tasks.begin(), tasks.end());
}

nlohmann::json ReplayMemory::describe() const {
  return {{"capacity", capacity_},
          {"policy", policy_ == Policy::reservoir ? "reservoir" : "class_balanced"},
          {"size", filled_},
          {"seen", seen_},
          {"per_class", class_counts()},
          {"stored", "training-set row indices (inputs are rebuilt from the stream)"}};
}

}  // namespace clrun
