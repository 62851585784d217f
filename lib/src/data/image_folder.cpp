// Image folders, root/{train,test}/<class>/**/*.{jpg,jpeg,png} (torchvision's ImageFolder layout):
// the data set image_folder and its presets imagenet-r and imagenet-a, the pre-split train/test
// folders PILOT and RanPAC read. Files are decoded with stb_image on a thread per core, resized
// on load to one size and kept as uint8 [N, 3, H, W]: in memory (cache: memory), or decoded once
// into a file under the data cache directory that every run memory-maps (cache: disk), so that a
// data set larger than the memory is paged in by the OS as batches read it.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>

#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"
#include "clrun/data/data_cache.hpp"
#include "clrun/data/dataset.hpp"

namespace clrun {

namespace {

namespace fs = std::filesystem;

/// Larger than any photo a CL benchmark holds; a bigger file is refused before it is read.
constexpr std::uint64_t kMaxImageBytes = std::uint64_t(256) << 20;

/// What distinguishes image_folder from its presets: name, defaults and where the data comes from.
struct Preset {
  const char* name;
  const char* description;
  const char* default_root;
  const char* dir;       ///< the folder the data usually extracts to (hint for a root one level up); may be ""
  int64_t classes;       ///< class folders the data set has; 0 = any
  int64_t size;          ///< default square load size; 0 = the images' own size
  bool normalize;        ///< default of the normalize option
  const char* obtain;    ///< where the data comes from, for the missing-data error
};

const Preset kImageFolder{
    "image_folder", "image folders root/{train,test}/<class>/*.{jpg,jpeg,png} (class = sorted train subfolders)",
    "data/images", "", 0, 0, true,
    "lay the images out as ROOT/train/<class>/*.jpg|jpeg|png and ROOT/test/<class>/... (the test classes "
    "the train classes or a subset)"};

// PILOT (utils/data.py iImageNetR: ./data/imagenet-r/{train,test}) and RanPAC (../../Data/imagenet-r/
// {train,test}) read a pre-split copy with torchvision's ImageFolder: 200 wnid class folders per split.
const Preset kImageNetR{
    "imagenet-r", "ImageNet-R as PILOT/RanPAC split it: root/{train,test}/<wnid>/*.jpg, 200 classes",
    "data/imagenet-r", "imagenet-r", 200, 256, false,
    "ImageNet-R (Hendrycks et al., 30,000 renditions of 200 ImageNet classes) in the 80/20 train/test split "
    "PILOT and RanPAC use: the pre-split archive linked from the READMEs of github.com/sun-hailong/LAMDA-PILOT "
    "and github.com/zhoudw-zdw/RevisitingCIL (Datasets: ImageNet-R), extracted so that ROOT/train/<wnid>/ and "
    "ROOT/test/<wnid>/ exist (PILOT's ./data/imagenet-r)"};

const Preset kImageNetA{
    "imagenet-a", "ImageNet-A as PILOT/RanPAC split it: root/{train,test}/<wnid>/*.jpg, 200 classes",
    "data/imagenet-a", "imagenet-a", 200, 256, false,
    "ImageNet-A (Hendrycks et al., 7,500 natural adversarial images of 200 ImageNet classes) in the train/test "
    "split PILOT and RanPAC use: the pre-split archive linked from the README of "
    "github.com/zhoudw-zdw/RevisitingCIL (Datasets: ImageNet-A), extracted so that ROOT/train/<wnid>/ and "
    "ROOT/test/<wnid>/ exist (PILOT's ./data/imagenet-a)"};

template <const Preset& P>
struct FolderOptions {
  std::string root = P.default_root;  ///< the folder holding train/ and test/
  /// [H, W] every image is resized to on load; [] = the images' own size (they must all share it)
  std::vector<int64_t> size = P.size ? std::vector<int64_t>{P.size, P.size} : std::vector<int64_t>{};
  std::string load_resize = "shorter_then_center_crop";
  bool normalize = P.normalize;
  std::vector<double> mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225};  ///< ImageNet's
  std::string cache = "memory";

  template <class V>
  void fields(V& v) {
    v("root", root, "the folder holding train/<class>/ and test/<class>/ (images: .jpg, .jpeg, .png)");
    v("size", size,
      "[H, W] every image is resized to on load (bicubic, antialiased, as PIL); [] = the images' own size, "
      "which must then be the same for all", at_least(1));
    v("load_resize", load_resize,
      "shorter_then_center_crop: scale to cover [H, W] keeping the aspect ratio, then crop the center "
      "(torchvision's Resize + CenterCrop); stretch: scale to [H, W] ignoring the aspect ratio",
      one_of({"shorter_then_center_crop", "stretch"}));
    v("normalize", normalize,
      P.normalize ? "standardise each channel with mean and std"
                  : "standardise each channel with mean and std (PILOT and RanPAC feed ViTs [0, 1] pixels: false)");
    v("mean", mean, "per-channel mean of pixels scaled to [0, 1] (default: ImageNet's)", in_range(0, 1));
    v("std", std, "per-channel std of pixels scaled to [0, 1] (default: ImageNet's)", above(0));
    v("cache", cache,
      "memory: each split decoded into one uint8 tensor in memory; disk: decoded once into a file under the "
      "data cache directory (CLRUN_DATA_CACHE_DIR, else $XDG_CACHE_HOME/clrun/data) that runs memory-map and "
      "the OS pages in as batches need it (for data sets larger than the memory; batches move to the device "
      "one by one)",
      one_of({"memory", "disk"}));
  }

  void validate(const ConfigNode& node) const {
    if (!size.empty() && size.size() != 2) node.child("size").fail("expected [H, W] or [], got " + std::to_string(size.size()) + " numbers");
    for (int64_t s : size)
      if (s > 16384) node.child("size").fail(std::to_string(s) + " must be <= 16384");
    if (mean.size() != 1 && mean.size() != 3) node.child("mean").fail("expected 1 or 3 values (R, G, B)");
    if (std.size() != 1 && std.size() != 3) node.child("std").fail("expected 1 or 3 values (R, G, B)");
  }
};

// ---- listing -------------------------------------------------------------------------------

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool is_image(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

/// Sorted names of the (non-hidden) subfolders of `dir`: the classes, as ImageFolder finds them.
std::vector<std::string> class_folders(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (!hidden(it->path()) && fs::is_directory(it->path())) out.push_back(it->path().filename().string());
  if (ec) throw InputError(dir.string() + ": cannot list folder (" + ec.message() + ")");
  std::sort(out.begin(), out.end());
  return out;
}

struct Listing {
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  int64_t skipped = 0;  ///< files that are not .jpg/.jpeg/.png
  std::string skipped_example;
};

/// The images under `dir` (recursively, symlinks followed), in the order of torchvision's
/// ImageFolder: sorted by folder path, then by file name.
void list_images(const fs::path& dir, int64_t label, Listing& out) {
  std::vector<std::pair<std::string, std::string>> found;  // (folder, file name)
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (hidden(p)) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (fs::is_directory(p)) continue;
    if (!is_image(p)) {
      if (out.skipped++ == 0) out.skipped_example = p.string();
      continue;
    }
    found.emplace_back(p.parent_path().string(), p.filename().string());
  }
  if (ec) throw InputError(dir.string() + ": cannot list folder (" + ec.message() + ")");
  if (found.empty())
    throw InputError(dir.string() + ": no .jpg, .jpeg or .png images in this class folder (every class folder "
                     "must hold at least one)");
  std::sort(found.begin(), found.end());
  for (auto& [folder, name] : found) {
    out.files.push_back((fs::path(folder) / name).string());
    out.labels.push_back(label);
  }
}

// ---- decoding ------------------------------------------------------------------------------

std::string read_image_file(const std::string& path) {
  std::error_code ec;
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) throw InputError(path + ": cannot read file (" + ec.message() + ")");
  if (size == 0) throw InputError(path + ": empty file; expected a JPEG or PNG image");
  if (size > kMaxImageBytes) throw InputError(path + ": " + std::to_string(size) + " bytes, too large for an image (256 MiB at most)");
  std::ifstream in(path, std::ios::binary);
  std::string bytes(static_cast<std::size_t>(size), '\0');
  if (!in || !in.read(bytes.data(), static_cast<std::streamsize>(size))) throw InputError(path + ": cannot read file");
  return bytes;
}

/// Python's round() (half to even), as torchvision's center crop uses it.
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

/// Decoded images in RGB order, freed by stb.
struct Decoded {
  int w = 0, h = 0;
  std::unique_ptr<unsigned char, void (*)(void*)> pixels{nullptr, stbi_image_free};
};

Decoded decode(const std::string& path) {
  const std::string bytes = read_image_file(path);
  Decoded d;
  int channels = 0;
  // req_comp = 3: grey becomes RGB, alpha is dropped (PIL's convert('RGB')); 16-bit PNGs become 8-bit.
  d.pixels.reset(stbi_load_from_memory(reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()),
                                       &d.w, &d.h, &channels, 3));
  if (!d.pixels) {
    const char* why = stbi_failure_reason();
    throw InputError(path + ": cannot decode image (" + (why ? why : "unknown error") +
                     "); the file is corrupt or not a JPEG/PNG");
  }
  return d;
}

/// How images reach [H, W]: kept (all must be H x W), scaled to cover and center-cropped, or stretched.
enum class Fit { native, cover, stretch };

/// One image, decoded and resized, into `out` (uint8 [3, H, W], channel-planar).
void load_image(const std::string& path, int64_t H, int64_t W, Fit fit, unsigned char* out) {
  Decoded d = decode(path);
  const int64_t h = d.h, w = d.w;
  if (fit == Fit::native && (h != H || w != W))
    throw InputError(path + ": the image is " + std::to_string(w) + "x" + std::to_string(h) + ", the first one " +
                     std::to_string(W) + "x" + std::to_string(H) + " (width x height); set the data set's size: [H, W] "
                     "to resize every image on load");
  const bool stretch = fit == Fit::stretch;
  int64_t nh = H, nw = W;  // the size the image is scaled to before cropping
  if (!stretch && (h != H || w != W)) {
    // Cover [H, W] keeping the aspect ratio: the side that binds gets its target exactly, the
    // other is truncated (torchvision's Resize), then the center is cropped.
    if (static_cast<double>(H) / h >= static_cast<double>(W) / w)
      nw = std::max(W, static_cast<int64_t>(static_cast<double>(w) * H / h));
    else
      nh = std::max(H, static_cast<int64_t>(static_cast<double>(h) * W / w));
  }
  std::vector<unsigned char> scaled;
  const unsigned char* src = d.pixels.get();
  if (nh != h || nw != w) {
    scaled.resize(static_cast<std::size_t>(nh * nw * 3));
    // Catmull-Rom, scaled with the ratio when shrinking: PIL's antialiased BICUBIC.
    if (!stbir_resize_uint8_generic(src, static_cast<int>(w), static_cast<int>(h), 0, scaled.data(), static_cast<int>(nw),
                                    static_cast<int>(nh), 0, 3, STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                    STBIR_FILTER_CATMULLROM, STBIR_COLORSPACE_LINEAR, nullptr))
      throw InputError(path + ": cannot resize image from " + std::to_string(w) + "x" + std::to_string(h));
    src = scaled.data();
  }
  const int64_t top = round_half_even((nh - H) / 2.0), left = round_half_even((nw - W) / 2.0);
  for (int64_t y = 0; y < H; ++y) {
    const unsigned char* row = src + ((top + y) * nw + left) * 3;
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < 3; ++c) out[(c * H + y) * W + x] = row[x * 3 + c];
  }
}

/// Decodes `files` into `base` (uint8 [N, 3, H, W]) on a thread per core; the first failure
/// (lowest file index among those tried) is rethrown.
void decode_all(const std::vector<std::string>& files, int64_t H, int64_t W, Fit fit, unsigned char* base) {
  const auto n = static_cast<int64_t>(files.size());
  const int64_t per_image = 3 * H * W;
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  int64_t error_index = n;
  std::string error;
  auto work = [&] {
    for (int64_t i; !failed && (i = next++) < n;) {
      try {
        load_image(files[i], H, W, fit, base + i * per_image);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (i < error_index) error_index = i, error = e.what();
        failed = true;
      }
    }
  };
  const int64_t threads = std::min<int64_t>(n, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (failed) throw InputError(error);
}

// ---- cache: disk ---------------------------------------------------------------------------
//
// One file per split and load setting: a page of header (magic, N, H, W), then the uint8
// [N, 3, H, W] images. Its name hashes the size, the fit and every file's path, size and mtime,
// so a changed image makes a new entry; it is written to a temp file and renamed, so an entry
// that exists is complete. Old entries are not removed.

constexpr int64_t kHeaderBytes = 4096;  // a page: the images start page-aligned
constexpr char kMagic[8] = {'C', 'L', 'R', 'U', 'N', 'I', 'M', '1'};

std::string images_entry(const std::string& dir, const std::string& dataset, const std::string& split,
                         const std::vector<std::string>& files, int64_t H, int64_t W, Fit fit) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  auto mix = [&h](const std::string& s) {
    for (unsigned char c : s + '\n') h = (h ^ c) * 1099511628211ULL;
  };
  mix(std::to_string(H) + "x" + std::to_string(W) + " fit " + std::to_string(static_cast<int>(fit)));
  for (const std::string& f : files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) throw InputError(f + ": cannot read file (" + std::strerror(errno) + ")");
    mix(fs::absolute(f).lexically_normal().string() + " " + std::to_string(st.st_size) + " " +
        std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec));
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return dir + "/" + dataset + "_" + split + "_" + hex + ".u8";
}

/// The images of a complete entry, memory-mapped copy-on-write (the file never changes); null
/// when the entry is absent or does not hold what its name says.
torch::Tensor map_entry(const std::string& path, int64_t n, int64_t H, int64_t W) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  const auto bytes = static_cast<std::size_t>(kHeaderBytes + n * 3 * H * W);
  struct stat st {};
  int64_t header[4] = {};
  const bool ok = ::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) == bytes &&
                  ::pread(fd, header, sizeof(header), 0) == static_cast<ssize_t>(sizeof(header)) &&
                  std::memcmp(header, kMagic, 8) == 0 && header[1] == n && header[2] == H && header[3] == W;
  void* p = ok ? ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  ::close(fd);
  if (p == MAP_FAILED) return {};
  return torch::from_blob(static_cast<unsigned char*>(p) + kHeaderBytes, {n, 3, H, W},
                          [p, bytes](void*) { ::munmap(p, bytes); }, torch::kUInt8);
}

/// Decodes `files` into a new entry at `path` (through a temp file in the same folder).
void write_entry(const std::string& path, const std::vector<std::string>& files, int64_t H, int64_t W, Fit fit) {
  const auto n = static_cast<int64_t>(files.size());
  const auto bytes = static_cast<std::size_t>(kHeaderBytes + n * 3 * H * W);
  const std::string dir = fs::path(path).parent_path().string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) == 0 && static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize < bytes)
    throw InputError("stream.dataset.cache: disk needs " + std::to_string(bytes >> 20) + " MiB for " + path +
                     ", more than is free there; free space or set CLRUN_DATA_CACHE_DIR to a larger disk");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw InputError("stream.dataset.cache: disk: cannot create " + tmp + " (" + std::strerror(errno) +
                     "); set CLRUN_DATA_CACHE_DIR to a writable folder");
  void* p = ::ftruncate(fd, static_cast<off_t>(bytes)) == 0 ? ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                                                           : MAP_FAILED;
  if (p == MAP_FAILED) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    fs::remove(tmp, ec);
    throw InputError("stream.dataset.cache: disk: cannot size or map " + tmp + " (" + why + ")");
  }
  auto* base = static_cast<unsigned char*>(p);
  const int64_t header[4] = {0, n, H, W};
  std::memcpy(base, header, sizeof(header));
  std::memcpy(base, kMagic, 8);
  try {
    decode_all(files, H, W, fit, base + kHeaderBytes);
  } catch (...) {
    ::munmap(p, bytes);
    ::close(fd);
    fs::remove(tmp, ec);
    throw;
  }
  const bool synced = ::msync(p, bytes, MS_SYNC) == 0;
  ::munmap(p, bytes);
  const bool closed = ::fsync(fd) == 0 && ::close(fd) == 0;
  if (!synced || !closed || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    fs::remove(tmp, ec);
    throw InputError("stream.dataset.cache: disk: cannot write " + path + " (" + why + ")");
  }
}

/// The split's images: decoded into memory, or (disk) mapped from its cache entry, written first
/// when absent. `reused` tells whether an entry was there.
torch::Tensor load_images(const std::vector<std::string>& files, int64_t H, int64_t W, Fit fit, const std::string& cache,
                          const std::string& dataset, const std::string& split, bool& reused) {
  const auto n = static_cast<int64_t>(files.size());
  reused = false;
  if (cache == "memory") {
    torch::Tensor images = torch::empty({n, 3, H, W}, torch::kUInt8);
    decode_all(files, H, W, fit, images.data_ptr<uint8_t>());
    return images;
  }
  const std::string root = data_cache_dir();
  if (root.empty())
    throw InputError("stream.dataset.cache: disk keeps the decoded images under the data cache directory, which is "
                     "off (CLRUN_DATA_CACHE) or has no home; set CLRUN_DATA_CACHE_DIR to a folder");
  const std::string path = images_entry(root + "/images", dataset, split, files, H, W, fit);
  torch::Tensor images = map_entry(path, n, H, W);
  reused = images.defined();
  if (reused) return images;
  write_entry(path, files, H, W, fit);
  images = map_entry(path, n, H, W);
  if (!images.defined()) throw InputError("stream.dataset.cache: disk: cannot map " + path + " after writing it");
  return images;
}

/// MemAvailable from /proc/meminfo in bytes; 0 when unknown.
std::uint64_t available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}

// ---- the data set --------------------------------------------------------------------------

template <const Preset& P>
std::string not_found(const std::string& root, const std::string& missing) {
  std::string hint = P.obtain;
  if (*P.dir && fs::is_directory(fs::path(root) / P.dir / "train"))
    hint = "root should be the data's own folder: " + (fs::path(root) / P.dir).string();
  return "stream.dataset.root: data set '" + std::string(P.name) + "' not found: " + missing +
         " does not exist (expected " + root + "/train/<class>/*.jpg|jpeg|png and " + root +
         "/test/<class>/...)\nhint: " + hint + "; nothing is downloaded at run time";
}

template <const Preset& P>
std::shared_ptr<Dataset> load(const FolderOptions<P>& o) {
  const fs::path root(o.root), train_dir = root / "train", test_dir = root / "test";
  for (const fs::path& p : {root, train_dir, test_dir})
    if (!fs::is_directory(p)) throw InputError(not_found<P>(o.root, p.string()));

  auto ds = std::make_shared<Dataset>();
  ds->name = normalize_name(P.name);
  ds->class_names = class_folders(train_dir);
  ds->num_classes = static_cast<int64_t>(ds->class_names.size());
  if (ds->class_names.empty()) throw InputError(train_dir.string() + ": no class folders (expected train/<class>/*.jpg)");
  if (P.classes && ds->num_classes != P.classes)
    throw InputError(train_dir.string() + ": " + std::to_string(ds->num_classes) + " class folders, but " + P.name +
                     " has " + std::to_string(P.classes) + "\nhint: " + P.obtain);
  // The test classes must be train classes: labels are positions among the train classes.
  std::vector<std::string> test_classes = class_folders(test_dir), unknown;
  for (const std::string& c : test_classes)
    if (!std::binary_search(ds->class_names.begin(), ds->class_names.end(), c)) unknown.push_back(c);
  if (!unknown.empty()) {
    if (unknown.size() > 5) unknown.resize(5), unknown.push_back("...");
    throw InputError(test_dir.string() + ": class folders not in " + train_dir.string() + ": " + join(unknown, ", ") +
                     " (the test classes must be the train classes or a subset)");
  }
  if (test_classes.empty()) throw InputError(test_dir.string() + ": no class folders (expected test/<class>/*.jpg)");

  Listing train, test;
  for (int64_t k = 0; k < ds->num_classes; ++k) list_images(train_dir / ds->class_names[k], k, train);
  for (const std::string& c : test_classes) {
    const auto k = std::lower_bound(ds->class_names.begin(), ds->class_names.end(), c) - ds->class_names.begin();
    list_images(test_dir / c, k, test);
  }
  const int64_t skipped = train.skipped + test.skipped;
  if (skipped)
    spdlog::warn("{}: skipped {} file(s) that are not .jpg, .jpeg or .png (e.g. {})", o.root, skipped,
                 train.skipped ? train.skipped_example : test.skipped_example);

  int64_t H = 0, W = 0;
  const bool native = o.size.empty();
  if (native) {
    Decoded first = decode(train.files.front());
    H = first.h, W = first.w;
  } else {
    H = o.size[0], W = o.size[1];
  }
  const auto count = static_cast<std::uint64_t>(train.files.size() + test.files.size());
  const std::uint64_t bytes = count * 3 * static_cast<std::uint64_t>(H * W), available = available_memory();
  if (o.cache == "memory" && available && bytes > available)
    throw InputError("stream.dataset: " + std::to_string(count) + " images of 3x" + std::to_string(H) + "x" +
                     std::to_string(W) + " need " + std::to_string(bytes >> 20) + " MiB in memory, more than the " +
                     std::to_string(available >> 20) + " MiB available\nhint: lower stream.dataset.size, or set "
                     "stream.dataset.cache: disk (decoded once into a memory-mapped file)");

  const auto start = std::chrono::steady_clock::now();
  const Fit fit = native ? Fit::native : o.load_resize == "stretch" ? Fit::stretch : Fit::cover;
  bool train_reused = false, test_reused = false;
  ds->train = {load_images(train.files, H, W, fit, o.cache, ds->name, "train", train_reused),
               torch::tensor(train.labels, torch::kInt64), {}, {}};
  ds->test = {load_images(test.files, H, W, fit, o.cache, ds->name, "test", test_reused),
              torch::tensor(test.labels, torch::kInt64), {}, {}};
  ds->host_images = o.cache == "disk";
  spdlog::info("{}: {} train + {} test images of {} classes {} in {:.1f}s ({} threads) into 3x{}x{} uint8 ({} MiB{})",
               o.root, train.files.size(), test.files.size(), ds->num_classes,
               train_reused && test_reused ? "mapped from the disk cache" : "decoded",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
               std::max(1u, std::thread::hardware_concurrency()), H, W, bytes >> 20,
               o.cache == "disk" ? ", memory-mapped files under " + data_cache_dir() + "/images" : "");
  ds->set_normalization(o.normalize, o.mean, o.std);
  return ds;
}

template <const Preset& P>
void add_preset(DatasetRegistry& registry) {
  registry.add<FolderOptions<P>>(P.name, P.description, [](const FolderOptions<P>& o) { return load(o); });
}

}  // namespace

void register_image_folder(DatasetRegistry& registry) {
  add_preset<kImageFolder>(registry);
  add_preset<kImageNetR>(registry);
  add_preset<kImageNetA>(registry);
}

}  // namespace clrun
