// Split helpers.
#include "clrun/data/dataset.hpp"

#include <torch/torch.h>

namespace clrun {

Split Split::select(const torch::Tensor& rows) const {
  auto sel = [&](const torch::Tensor& t) { return t.defined() ? t.index_select(0, rows.to(t.device())) : t; };
  return {sel(images), sel(labels), sel(targets), sel(groups)};
}

}  // namespace clrun
