// CIFAR-10 and CIFAR-100 in their official binary versions (cifar-10-batches-bin,
// cifar-100-binary): registered as the data sets cifar10 and cifar100.
#include "clrun/data/cifar.hpp"

#include <filesystem>
#include <fstream>

#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"

namespace clrun {

namespace {

namespace fs = std::filesystem;

/// Larger than any real batch file (CIFAR-100's train.bin is 147 MiB); a bigger file is refused
/// before it is read.
constexpr std::uint64_t kMaxBatchBytes = std::uint64_t(4) << 30;
/// A class-names file is a few hundred bytes.
constexpr std::uint64_t kMaxNamesBytes = std::uint64_t(1) << 20;

const char* const kSource = "https://www.cs.toronto.edu/~kriz/cifar.html";

/// The label byte(s) a data set uses, where their class names are and the standard names used
/// when that file is absent.
struct Labels {
  const char* names_file;
  std::vector<std::string> default_names;
};

struct Layout {
  const char* name;
  const char* title;         ///< as the CIFAR page names it
  const char* dir;           ///< the directory the archive extracts to
  const char* archive;       ///< the binary version's archive on the CIFAR page
  const char* default_root;  ///< relative to the working directory, as mnist's data/mnist
  const char* root_doc;      ///< the `root` option's description
  std::vector<std::string> train_files, test_files;
  Labels labels;             ///< CIFAR-10's labels; CIFAR-100's fine labels
  Labels coarse;             ///< CIFAR-100's 20 superclasses (unused for CIFAR-10)
  // Per-channel (R, G, B) mean and population std of the 50,000 training images with pixels
  // scaled to [0, 1], rounded to 4 digits (computed over the data; the same constants as
  // Mammoth's seq-cifar10 / seq-cifar100).
  double mean[3], std[3];
};

const Layout kCifar10{
    "cifar10", "CIFAR-10", "cifar-10-batches-bin", "cifar-10-binary.tar.gz", "data/cifar-10-batches-bin",
    "directory of the extracted CIFAR-10 binary version (data_batch_{1..5}.bin, test_batch.bin)",
    {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"},
    {"test_batch.bin"},
    {"batches.meta.txt",
     {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}},
    {nullptr, {}},
    {0.4914, 0.4822, 0.4465},
    {0.2470, 0.2435, 0.2616}};

const Layout kCifar100{
    "cifar100", "CIFAR-100", "cifar-100-binary", "cifar-100-binary.tar.gz", "data/cifar-100-binary",
    "directory of the extracted CIFAR-100 binary version (train.bin, test.bin)",
    {"train.bin"},
    {"test.bin"},
    {"fine_label_names.txt",
     {"apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
      "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
      "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
      "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
      "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
      "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
      "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
      "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
      "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
      "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"}},
    {"coarse_label_names.txt",
     {"aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
      "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
      "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
      "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees", "vehicles_1",
      "vehicles_2"}},
    {0.5071, 0.4865, 0.4409},
    {0.2673, 0.2564, 0.2762}};

template <const Layout& L>
struct CifarOptions {
  std::string root = L.default_root;  ///< the extracted binary version's directory
  bool normalize = true;              ///< standardise each channel with the training set's mean and std
  std::string labels = "fine";        ///< CIFAR-100 only: fine (100 classes) | coarse (20 superclasses)

  template <class V>
  void fields(V& v) {
    v("root", root, L.root_doc);
    v("normalize", normalize, "standardise each channel with the training set's mean and std");
    if (L.coarse.names_file)
      v("labels", labels, "fine: the 100 classes; coarse: the 20 superclasses", one_of({"fine", "coarse"}));
  }
};

/// The size check parse_cifar_batch and reading a file share: a positive whole number of records.
int64_t count_records(std::uint64_t size, const std::string& name, const CifarFormat& format) {
  const auto record = static_cast<std::uint64_t>(format.record_bytes());
  if (size == 0)
    throw InputError(name + ": empty file; expected " + format.dataset + " records of " + std::to_string(record) +
                     " bytes");
  if (size % record != 0)
    throw InputError(name + ": " + std::to_string(size) + " bytes is not a whole number of " +
                     std::to_string(record) + "-byte " + format.dataset + " records (" +
                     std::to_string(size / record) + " records and " + std::to_string(size % record) +
                     " bytes over); the file is truncated or is not a " + format.dataset + " batch file");
  return static_cast<int64_t>(size / record);
}

void check_required_files(const std::string& root, const Layout& layout) {
  std::vector<std::string> expected = layout.train_files;
  expected.insert(expected.end(), layout.test_files.begin(), layout.test_files.end());
  for (const std::string& file : expected) {
    if (fs::is_regular_file(root + "/" + file)) continue;
    // A common slip: root names the directory the archive was extracted in, not the data's own.
    const std::string nested = root + "/" + layout.dir;
    std::string hint = fs::is_regular_file(nested + "/" + file)
                           ? "root should be the data's own directory: " + nested
                           : std::string("obtain the ") + layout.title + " binary version (" + layout.archive +
                                 ") from " + kSource + " and extract it (root is its " + layout.dir +
                                 " directory); nothing is downloaded at run time";
    throw InputError("stream.dataset.root: data set '" + std::string(layout.name) + "' not found: " + root + "/" +
                     file + " does not exist (expected " + join(expected, ", ") + " in " + root + ")\nhint: " +
                     hint);
  }
}

/// The whole file in one read, its size checked first (a truncated file fails before reading).
std::string read_batch_file(const std::string& path, const CifarFormat& format) {
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) throw InputError(path + ": cannot read file (" + ec.message() + ")");
  if (size > kMaxBatchBytes)
    throw InputError(path + ": " + std::to_string(size) + " bytes, more than a " + format.dataset +
                     " batch file may hold (4 GiB)");
  count_records(size, path, format);
  std::ifstream in(path, std::ios::binary);
  std::string bytes(static_cast<std::size_t>(size), '\0');
  if (!in || !in.read(bytes.data(), static_cast<std::streamsize>(size)))
    throw InputError(path + ": cannot read file");
  return bytes;
}

Split read_split(const std::string& root, const std::vector<std::string>& files, const CifarFormat& format) {
  std::vector<torch::Tensor> images, labels;
  for (const std::string& file : files) {
    const std::string path = root + "/" + file;
    Split part = parse_cifar_batch(read_batch_file(path, format), path, format);
    images.push_back(std::move(part.images));
    labels.push_back(std::move(part.labels));
  }
  if (files.size() == 1) return {images[0], labels[0], {}, {}};
  return {torch::cat(images), torch::cat(labels), {}, {}};
}

/// The names file when present, else the standard names.
std::vector<std::string> class_names(const std::string& root, const Labels& labels) {
  const std::string path = root + "/" + labels.names_file;
  if (!fs::exists(path)) return labels.default_names;
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) throw InputError(path + ": cannot read file (" + ec.message() + ")");
  if (size > kMaxNamesBytes) throw InputError(path + ": " + std::to_string(size) + " bytes, too large for a class-names file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open file");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_cifar_class_names(text, path, static_cast<int64_t>(labels.default_names.size()));
}

template <const Layout& L>
std::shared_ptr<Dataset> load(const CifarOptions<L>& o) {
  const bool coarse = L.coarse.names_file && o.labels == "coarse";
  const CifarFormat format = &L == &kCifar100 ? cifar100_format(coarse) : cifar10_format();
  check_required_files(o.root, L);
  auto ds = std::make_shared<Dataset>();
  ds->name = L.name;
  ds->train = read_split(o.root, L.train_files, format);
  ds->test = read_split(o.root, L.test_files, format);
  ds->class_names = class_names(o.root, coarse ? L.coarse : L.labels);
  ds->num_classes = static_cast<int64_t>(ds->class_names.size());
  ds->set_normalization(o.normalize, {L.mean, L.mean + 3}, {L.std, L.std + 3});
  return ds;
}

template <const Layout& L>
void add_layout(DatasetRegistry& registry, const std::string& description) {
  registry.add<CifarOptions<L>>(L.name, description, [](const CifarOptions<L>& o) { return load(o); });
}

}  // namespace

CifarFormat cifar10_format() {
  return {"cifar10", {""}, {static_cast<int64_t>(kCifar10.labels.default_names.size())}, 0};
}

CifarFormat cifar100_format(bool coarse) {
  return {"cifar100",
          {"coarse", "fine"},
          {static_cast<int64_t>(kCifar100.coarse.default_names.size()),
           static_cast<int64_t>(kCifar100.labels.default_names.size())},
          coarse ? 0 : 1};
}

Split parse_cifar_batch(std::string_view bytes, const std::string& name, const CifarFormat& format) {
  const int64_t n = count_records(bytes.size(), name, format);
  const int64_t record = format.record_bytes();
  const auto label_bytes = static_cast<int64_t>(format.label_kinds.size());
  // Every label byte is checked (CIFAR-100's unused one too: a bad one means a corrupt file).
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < label_bytes; ++k) {
      const int64_t value = p[i * record + k], classes = format.label_classes[k];
      if (value < classes) continue;
      const std::string& kind = format.label_kinds[k];
      throw InputError(name + ": " + (kind.empty() ? "" : kind + " ") + "label " + std::to_string(value) +
                       " at record " + std::to_string(i) + " is outside " + format.dataset + "'s " +
                       std::to_string(classes) + (kind.empty() ? "" : " " + kind) + " classes (0.." +
                       std::to_string(classes - 1) + "); the file is corrupt or belongs to another data set");
    }
  }
  // The records as one [N, record] byte matrix, without a copy; the pixel columns are already
  // channel-planar and row-major, i.e. [3, 32, 32]. clone() copies them out of `bytes` (and
  // must: for N = 1 the narrowed view counts as contiguous, so contiguous() would not copy).
  torch::Tensor raw = torch::from_blob(const_cast<char*>(bytes.data()), {n, record}, torch::kUInt8);
  torch::Tensor images = raw.narrow(1, label_bytes, kCifarImageBytes).clone(torch::MemoryFormat::Contiguous);
  torch::Tensor labels = raw.select(1, format.label).to(torch::kInt64);
  return {images.view({n, 3, 32, 32}), labels, {}, {}};
}

std::vector<std::string> parse_cifar_class_names(std::string_view text, const std::string& name, int64_t expected) {
  std::vector<std::string> names;
  std::size_t count = 0, pos = 0;
  const char* const space = " \t\r\v\f";
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    const std::size_t first = line.find_first_not_of(space);
    if (first == std::string_view::npos) continue;
    line = line.substr(first, line.find_last_not_of(space) - first + 1);
    if (static_cast<int64_t>(++count) <= expected) names.emplace_back(line);
  }
  if (static_cast<int64_t>(count) != expected)
    throw InputError(name + ": " + std::to_string(count) + " class names, expected " + std::to_string(expected) +
                     " (one per line)");
  return names;
}

void register_cifar(DatasetRegistry& registry) {
  add_layout<kCifar10>(registry, "CIFAR-10 binary version: 50k/10k 32x32 colour images, 10 classes");
  add_layout<kCifar100>(registry,
                        "CIFAR-100 binary version: 50k/10k 32x32 colour images, 100 classes (or 20 coarse)");
}

}  // namespace clrun
