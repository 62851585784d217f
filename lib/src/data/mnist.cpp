// Datasets in the MNIST file layout: fashion-mnist (embedded default, shipped by Debian's
// dataset-fashion-mnist) and mnist (any directory with the same four IDX files).
#include <filesystem>

#include "clrun/core/text.hpp"
#include "clrun/data/data_cache.hpp"
#include "clrun/data/dataset.hpp"
#include "clrun/data/idx.hpp"

namespace clrun {

namespace {

namespace fs = std::filesystem;

const char* const kFiles[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

struct Layout {
  const char* name;
  const char* default_root;
  const char* obtain;  ///< where the data comes from, for the missing-data error
  std::vector<std::string> class_names;
  double mean, std;
};

const Layout kFashion{"fashion-mnist", "/usr/share/datasets/fashion-mnist",
                      "apt-get install dataset-fashion-mnist (Debian), or the four files of "
                      "github.com/zalandoresearch/fashion-mnist",
                      {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot"},
                      0.2860, 0.3530};
const Layout kMnist{"mnist", "data/mnist", "the four files of the MNIST database (yann.lecun.com/exdb/mnist)",
                    {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, 0.1307, 0.3081};

template <const Layout& L>
struct MnistOptions {
  std::string root = L.default_root;  ///< directory with the four IDX files (.gz or plain)
  bool normalize = true;  ///< subtract the data set's mean and divide by its std

  template <class V>
  void fields(V& v) {
    v("root", root, "directory holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]");
    v("normalize", normalize, "standardise inputs with the data set's mean and std");
  }
};

std::string find_file(const std::string& root, const std::string& stem, const Layout& layout) {
  for (const std::string& candidate : {root + "/" + stem + ".gz", root + "/" + stem})
    if (fs::is_regular_file(candidate)) return candidate;
  std::vector<std::string> expected;
  for (const char* f : kFiles) expected.push_back(std::string(f) + "[.gz]");
  throw InputError("stream.dataset.root: data set '" + std::string(layout.name) + "' not found: " + root + "/" +
                   stem + "[.gz] does not exist (expected " + join(expected, ", ") + " in " + root +
                   ")\nhint: obtain it with " + layout.obtain + "; nothing is downloaded at run time");
}

Split read_split(const std::string& root, const char* images, const char* labels, const Layout& layout) {
  const int64_t num_classes = static_cast<int64_t>(layout.class_names.size());
  std::string image_path = find_file(root, images, layout);
  std::string label_path = find_file(root, labels, layout);
  // Inflated once, then read from the data cache (keyed by path, size and mtime).
  const std::string cache_dir = data_cache_dir();
  torch::Tensor x = read_idx_cached(image_path, cache_dir);
  torch::Tensor y = read_idx_cached(label_path, cache_dir);
  if (x.dim() != 3 && x.dim() != 4) throw InputError(image_path + ": expected images [N, H, W] or [N, C, H, W]");
  if (y.dim() != 1 || y.size(0) != x.size(0))
    throw InputError(label_path + ": expected " + std::to_string(x.size(0)) + " labels to match " + image_path);
  if (x.dim() == 3) x = x.unsqueeze(1);
  // The data set declares its classes: a corrupted label must not silently grow the stream.
  torch::Tensor bad = (y >= num_classes).nonzero();
  if (bad.numel() > 0) {
    int64_t row = bad[0][0].item<int64_t>();
    throw InputError(label_path + ": label " + std::to_string(y[row].item<int64_t>()) + " at index " +
                     std::to_string(row) + " is outside " + layout.name + "'s " +
                     std::to_string(num_classes) + " classes (0.." + std::to_string(num_classes - 1) +
                     "); the file is corrupt or belongs to another data set");
  }
  return {x.contiguous(), y.to(torch::kInt64), {}, {}};
}

template <const Layout& L>
std::shared_ptr<Dataset> load(const MnistOptions<L>& o) {
  const Layout& layout = L;
  const std::string& root = o.root;
  auto ds = std::make_shared<Dataset>();
  ds->name = layout.name;
  ds->train = read_split(root, kFiles[0], kFiles[1], layout);
  ds->test = read_split(root, kFiles[2], kFiles[3], layout);
  ds->class_names = layout.class_names;
  ds->num_classes = static_cast<int64_t>(ds->class_names.size());
  ds->set_normalization(o.normalize, {layout.mean}, {layout.std});
  return ds;
}

template <const Layout& L>
void add_layout(DatasetRegistry& registry, const std::string& description) {
  registry.add<MnistOptions<L>>(L.name, description, [](const MnistOptions<L>& o) { return load(o); });
}

}  // namespace

void register_mnist(DatasetRegistry& registry) {
  add_layout<kFashion>(registry, "Fashion-MNIST: 60k/10k 28x28 grey images, 10 classes, IDX files");
  add_layout<kMnist>(registry, "MNIST or any directory of MNIST-format IDX files");
}

}  // namespace clrun
