// Batch selection and concatenation.
#include "clrun/data/batch.hpp"

#include <torch/torch.h>

namespace clrun {

Batch Batch::rows(int64_t begin, int64_t end) const {
  auto first = [&](const torch::Tensor& t) { return t.defined() ? t.slice(0, begin, end) : t; };
  Batch out{first(inputs), first(targets), first(task_ids), first(index), first(weights), {}};
  for (const auto& [name, t] : extra) out.extra[name] = first(t);
  return out;
}

Batch Batch::select(const torch::Tensor& positions) const {
  auto sel = [&](const torch::Tensor& t) { return t.defined() ? t.index_select(0, positions) : t; };
  Batch out{sel(inputs), sel(targets), sel(task_ids), sel(index), sel(weights), {}};
  for (const auto& [name, t] : extra) out.extra[name] = sel(t);
  return out;
}

namespace {

/// torch::cat along rows; token batches padded to different lengths are right-padded to the
/// longest first (`fill`: the field's padding value).
torch::Tensor cat_rows(std::vector<torch::Tensor> ts, double fill) {
  if (ts.empty()) return {};
  if (ts[0].dim() == 2 && !ts[0].is_floating_point()) {
    int64_t width = 0;
    for (const auto& t : ts) width = std::max(width, t.size(1));
    for (auto& t : ts)
      if (t.size(1) < width) t = torch::constant_pad_nd(t, {0, width - t.size(1)}, fill);
  }
  return torch::cat(ts);
}

}  // namespace

Batch Batch::cat(const std::vector<Batch>& parts) {
  if (parts.size() == 1) return parts[0];
  auto all = [&](auto field, double fill) {
    std::vector<torch::Tensor> ts;
    for (const Batch& b : parts) {
      if (!(b.*field).defined()) return torch::Tensor();
      ts.push_back(b.*field);
    }
    return cat_rows(std::move(ts), fill);
  };
  Batch out;
  out.inputs = all(&Batch::inputs, 0);
  out.targets = all(&Batch::targets, kIgnoreTarget);
  out.task_ids = all(&Batch::task_ids, 0);
  bool any_weights = false, any_index = false;
  for (const Batch& b : parts) any_weights |= b.weights.defined(), any_index |= b.index.defined();
  std::vector<torch::Tensor> weights, index;
  for (const Batch& b : parts) {
    const auto opts = b.targets.options();
    if (any_weights)
      weights.push_back(b.weights.defined() ? b.weights
                                            : torch::full({b.size()}, 1.0 / static_cast<double>(std::max<int64_t>(1, b.size())),
                                                          opts.dtype(torch::kFloat32)));
    if (any_index) index.push_back(b.index.defined() ? b.index : torch::full({b.size()}, -1, opts.dtype(torch::kInt64)));
  }
  if (any_weights) out.weights = torch::cat(weights);
  if (any_index) out.index = torch::cat(index);
  for (const auto& [name, t] : parts[0].extra) {
    std::vector<torch::Tensor> ts;
    for (const Batch& b : parts) {
      auto it = b.extra.find(name);
      if (it == b.extra.end()) break;
      ts.push_back(it->second);
    }
    if (ts.size() == parts.size()) out.extra[name] = cat_rows(std::move(ts), 0);
  }
  return out;
}

}  // namespace clrun
