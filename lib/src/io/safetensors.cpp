// safetensors reading (mmap, validated header), writing (atomic) and loading into modules.
#include "clrun/io/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <system_error>
#include <tuple>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"
#include "clrun/io/atomic.hpp"

// The data are little-endian and copied as they are.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors reading/writing assumes a little-endian host");

namespace clrun {

namespace {

using ordered_json = nlohmann::ordered_json;

/// The reference implementation's limit (safetensors/src/tensor.rs, MAX_HEADER_SIZE).
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

bool& mmap_enabled() {
  static bool enabled = true;
  return enabled;
}

struct Dtype {
  const char* name;
  int size;
  torch::ScalarType torch;  ///< Undefined: a safetensors dtype torch 1.13 cannot hold
};

/// Every dtype of the reference implementation; the file's header names them as here.
constexpr Dtype kDtypes[] = {
    {"BOOL", 1, torch::kBool},      {"U8", 1, torch::kByte},         {"I8", 1, torch::kChar},
    {"I16", 2, torch::kShort},      {"I32", 4, torch::kInt},         {"I64", 8, torch::kLong},
    {"F16", 2, torch::kHalf},       {"BF16", 2, torch::kBFloat16},   {"F32", 4, torch::kFloat},
    {"F64", 8, torch::kDouble},     {"U16", 2, torch::ScalarType::Undefined},   {"U32", 4, torch::ScalarType::Undefined},
    {"U64", 8, torch::ScalarType::Undefined},  {"F8_E5M2", 1, torch::ScalarType::Undefined}, {"F8_E4M3", 1, torch::ScalarType::Undefined},
};

const Dtype* find_dtype(const std::string& name) {
  for (const Dtype& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const Dtype* dtype_of(torch::ScalarType t) {
  for (const Dtype& d : kDtypes)
    if (d.torch == t && t != torch::ScalarType::Undefined) return &d;
  return nullptr;
}

std::string dtype_names() {
  std::vector<std::string> names;
  for (const Dtype& d : kDtypes) names.emplace_back(d.name);
  return join(names, ", ");
}

/// A name from the file (or the caller) quoted for a one-line message: JSON-escaped, at most ~100 bytes.
std::string quote(const std::string& s) {
  std::string q = ordered_json(s).dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  if (q.size() > 100) {
    std::size_t cut = 96;
    while (cut > 1 && (static_cast<unsigned char>(q[cut]) & 0xC0) == 0x80) --cut;  // a UTF-8 boundary
    q = q.substr(0, cut) + "...\"";
  }
  return q;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// The dtype get(name, as) returns for a tensor stored as `stored`; see SafetensorsFile::get.
torch::ScalarType result_type(const Dtype& stored, torch::ScalarType as, const std::string& where) {
  if (stored.torch == torch::ScalarType::Undefined)
    throw InputError(where + ": dtype " + stored.name + " is not supported by this torch (supported: BOOL, U8, I8, "
                     "I16, I32, I64, F16, BF16, F32, F64)");
  const bool as_float = at::isFloatingType(as);
  if (!as_float && !at::isIntegralType(as, /*includeBool=*/true))
    throw std::invalid_argument("SafetensorsFile::get: cannot read as " + std::string(c10::toString(as)) +
                                " (a floating, integer or bool type is needed)");
  if (at::isFloatingType(stored.torch)) {
    if (!as_float)
      throw InputError(where + ": stored as " + stored.name + ", expected an integer type to read it as " +
                       c10::toString(as));
    return as;
  }
  return as_float ? stored.torch : as;
}

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

/// pread all of [offset, offset + n) or throw.
void pread_all(int fd, std::uint64_t offset, std::size_t n, void* dst, const std::string& path) {
  auto* out = static_cast<char*>(dst);
  while (n > 0) {
    ssize_t got = ::pread(fd, out, std::min<std::size_t>(n, std::size_t(1) << 30), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw InputError(path + ": cannot read (" + errno_text(errno) + ")");
    if (got == 0) throw InputError(path + ": file is shorter than when it was opened (changed while being read?)");
    out += got;
    offset += static_cast<std::uint64_t>(got);
    n -= static_cast<std::size_t>(got);
  }
}

/// Parses the header text, refusing duplicate keys in any object (the reference keeps the last
/// tensor of a duplicated name and refuses a duplicated field; a silent choice either way).
ordered_json parse_header(const char* begin, const char* end, const std::string& path) {
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  ordered_json::parser_callback_t cb = [&](int, nlohmann::json::parse_event_t event, ordered_json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) keys.emplace_back();
    else if (event == E::object_end && !keys.empty()) keys.pop_back();
    else if (event == E::key && !keys.empty() && duplicate.empty() && !keys.back().insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  // nlohmann's lexer takes a NUL byte for the end of the input; the reference (serde_json) refuses it.
  if (const void* nul = std::memchr(begin, 0, static_cast<std::size_t>(end - begin)))
    throw InputError(path + ": safetensors header is not valid JSON (a NUL byte at header offset " +
                     std::to_string(static_cast<const char*>(nul) - begin) + "; expected JSON padded with spaces)");
  ordered_json header;
  try {
    header = ordered_json::parse(begin, end, cb);
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    if (auto at = what.find("] "); what.rfind("[json.exception", 0) == 0 && at != std::string::npos)
      what = what.substr(at + 2);
    throw InputError(path + ": safetensors header is not valid JSON (" + what + ")");
  }
  if (!duplicate.empty()) throw InputError(path + ": safetensors header has the key " + quote(duplicate) + " twice");
  if (!header.is_object())
    throw InputError(path + ": safetensors header is JSON " + std::string(header.type_name()) + ", expected an object");
  return header;
}

/// An unsigned integer field of a tensor entry (shape dimension, offset), as JSON gives it.
bool as_uint(const ordered_json& v, std::uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<std::uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {  // "-0"
    out = static_cast<std::uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

struct SafetensorsFile::Impl {
  std::string path;
  int fd = -1;
  const char* map = nullptr;  ///< the whole file, or nullptr: read with pread
  std::uint64_t size = 0;
  std::uint64_t data_start = 0;  ///< 8 + header length
  std::vector<std::string> names;
  std::unordered_map<std::string, SafetensorsInfo> infos;
  std::map<std::string, std::string> metadata;

  ~Impl() {
    if (map) ::munmap(const_cast<char*>(map), static_cast<std::size_t>(size));
    if (fd >= 0) ::close(fd);
  }

  void read(std::uint64_t offset, std::size_t n, void* dst) const {
    if (n == 0) return;
    if (map) std::memcpy(dst, map + offset, n);
    else pread_all(fd, offset, n, dst, path);
  }

  void open() {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw InputError(path + ": cannot open file (" + errno_text(errno) + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw InputError(path + ": cannot stat file (" + errno_text(errno) + ")");
    if (!S_ISREG(st.st_mode)) throw InputError(path + ": not a regular file");
    size = static_cast<std::uint64_t>(st.st_size);
    if (size < 8)
      throw InputError(path + ": " + std::to_string(size) +
                       " bytes, too short for a safetensors file (expected an 8-byte header length first)");
    if (mmap_enabled() && size <= std::numeric_limits<std::size_t>::max()) {
      void* p = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) {
        map = static_cast<const char*>(p);
        ::close(fd);  // the mapping keeps the file
        fd = -1;
      }
    }
  }

  void parse_and_validate() {
    unsigned char len_bytes[8];
    read(0, 8, len_bytes);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
    if (n > kMaxHeaderBytes)
      throw InputError(path + ": safetensors header length " + std::to_string(n) + " is more than the limit of " +
                       std::to_string(kMaxHeaderBytes) + " bytes (not a safetensors file?)");
    if (n > size - 8)
      throw InputError(path + ": safetensors header length " + std::to_string(n) + " runs past the end of the file (" +
                       std::to_string(size) + " bytes)");
    data_start = 8 + n;
    std::string copy;
    const char* text = map ? map + 8 : nullptr;
    if (!map) {
      copy.resize(static_cast<std::size_t>(n));
      read(8, copy.size(), copy.data());
      text = copy.data();
    }
    ordered_json header = parse_header(text, text + n, path);

    for (auto& [name, entry] : header.items()) {
      if (name == kMetadataKey) {
        read_metadata(entry);
        continue;
      }
      infos.emplace(name, read_info(name, entry));
      names.push_back(name);
    }
    check_layout();
  }

  void read_metadata(const ordered_json& entry) {
    const std::string where = path + ": safetensors header: " + kMetadataKey;
    if (entry.is_null()) return;
    if (!entry.is_object()) throw InputError(where + " is JSON " + entry.type_name() + ", expected an object of strings");
    for (auto& [key, value] : entry.items()) {
      if (!value.is_string())
        throw InputError(where + "[" + quote(key) + "] is JSON " + value.type_name() + ", expected a string");
      metadata[key] = value.get<std::string>();
    }
  }

  SafetensorsInfo read_info(const std::string& name, const ordered_json& entry) const {
    const std::string where = path + ": tensor " + quote(name);
    if (!entry.is_object())
      throw InputError(where + ": header entry is JSON " + entry.type_name() +
                       ", expected an object {dtype, shape, data_offsets}");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(field)) throw InputError(where + ": header entry has no \"" + field + "\"");
    SafetensorsInfo info;
    const ordered_json& dtype = entry["dtype"];
    const Dtype* dt = dtype.is_string() ? find_dtype(dtype.get<std::string>()) : nullptr;
    if (!dt)
      throw InputError(where + ": unknown dtype " +
                       (dtype.is_string() ? quote(dtype.get<std::string>())
                                          : dtype.dump(-1, ' ', false, ordered_json::error_handler_t::replace)) +
                       " (expected one of " + dtype_names() + ")");
    info.dtype = dt->name;

    // Shape: non-negative integers whose product (the element count) and byte size fit 64 bits,
    // as the reference checks; also the product with zeros counted as one must fit int64, so that
    // torch can compute the strides of an empty tensor.
    const ordered_json& shape = entry["shape"];
    if (!shape.is_array()) throw InputError(where + ": shape is JSON " + std::string(shape.type_name()) + ", expected an array");
    std::uint64_t numel = 1, extent = 1;
    constexpr std::uint64_t kMax = static_cast<std::uint64_t>(std::numeric_limits<int64_t>::max());
    for (const ordered_json& d : shape) {
      std::uint64_t dim = 0;
      if (!as_uint(d, dim))
        throw InputError(where + ": shape entry " + d.dump(-1, ' ', false, ordered_json::error_handler_t::replace) +
                         " is not a non-negative integer");
      const std::uint64_t nonzero = std::max<std::uint64_t>(dim, 1);
      if (nonzero > kMax / extent)
        throw InputError(where + ": shape " + shape.dump() + " has more than 2^63 elements (overflow)");
      extent *= nonzero;
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    if (numel > kMax / static_cast<std::uint64_t>(dt->size))
      throw InputError(where + ": shape " + shape_string(info.shape) + " of " + dt->name + " is more than 2^63 bytes (overflow)");
    const std::uint64_t nbytes = numel * static_cast<std::uint64_t>(dt->size);

    const ordered_json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !as_uint(offsets[0], info.begin) || !as_uint(offsets[1], info.end))
      throw InputError(where + ": data_offsets " + offsets.dump(-1, ' ', false, ordered_json::error_handler_t::replace) +
                       " is not a pair [begin, end] of non-negative integers");
    if (info.end < info.begin)
      throw InputError(where + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                       "] end before they begin");
    if (info.end - info.begin != nbytes)
      throw InputError(where + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                       "] span " + std::to_string(info.end - info.begin) + " bytes, expected " + std::to_string(nbytes) +
                       " for " + dt->name + " " + shape_string(info.shape));
    return info;
  }

  /// The reference's rule: sorted by offsets, each tensor starts where the previous one ended
  /// (the first at 0) and the last ends at the end of the file.
  void check_layout() {
    std::stable_sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
      const SafetensorsInfo &x = infos.at(a), &y = infos.at(b);
      return std::tie(x.begin, x.end) < std::tie(y.begin, y.end);
    });
    const std::uint64_t data_size = size - data_start;
    std::uint64_t at = 0;
    const std::string* previous = nullptr;
    for (const std::string& name : names) {
      const SafetensorsInfo& info = infos.at(name);
      const std::string where = path + ": tensor " + quote(name) + ": data_offsets [" + std::to_string(info.begin) + ", " +
                                std::to_string(info.end) + "]";
      if (info.end > data_size)
        throw InputError(where + " run past the end of the data (" + std::to_string(data_size) + " bytes after the header)");
      if (info.begin < at)
        throw InputError(where + " overlap tensor " + quote(*previous) + " (which ends at " + std::to_string(at) + ")");
      if (info.begin > at)
        throw InputError(where + " leave a gap: expected it to begin at " + std::to_string(at) +
                         (previous ? ", where tensor " + quote(*previous) + " ends" : std::string(", the data's start")));
      at = info.end;
      previous = &name;
    }
    if (at != data_size)
      throw InputError(path + ": safetensors data section has " + std::to_string(data_size) + " bytes, the tensors cover " +
                       std::to_string(at) + " (expected them to cover it exactly)");
  }
};

void set_safetensors_mmap(bool enabled) { mmap_enabled() = enabled; }

SafetensorsFile::SafetensorsFile(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->open();
  impl_->parse_and_validate();
}

SafetensorsFile::~SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;

const std::string& SafetensorsFile::path() const { return impl_->path; }
const std::vector<std::string>& SafetensorsFile::names() const { return impl_->names; }
bool SafetensorsFile::has(const std::string& name) const { return impl_->infos.count(name) > 0; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return impl_->metadata; }

const SafetensorsInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = impl_->infos.find(name);
  if (it == impl_->infos.end())
    throw InputError(impl_->path + ": no tensor " + quote(name) + did_you_mean(name, impl_->names) + " (the file has " +
                     std::to_string(impl_->names.size()) + " tensors)");
  return it->second;
}

torch::Tensor SafetensorsFile::get(const std::string& name, torch::ScalarType as) const {
  const SafetensorsInfo& info = this->info(name);
  const Dtype& stored = *find_dtype(info.dtype);
  const torch::ScalarType type = result_type(stored, as, impl_->path + ": tensor " + quote(name));
  // BOOL is read as bytes and compared with 0: a byte other than 0/1 in a torch bool is undefined.
  torch::Tensor t = torch::empty(info.shape, stored.torch == torch::kBool ? torch::kUInt8 : stored.torch);
  impl_->read(impl_->data_start + info.begin, static_cast<std::size_t>(info.end - info.begin), t.data_ptr());
  if (stored.torch == torch::kBool) t = t.ne(0);
  return type == t.scalar_type() ? t : t.to(type);
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::set<std::string> seen;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const std::string where = path + ": cannot write tensor " + quote(name);
    if (name == kMetadataKey) throw WriteError(where + ": the name is reserved for the metadata");
    if (!seen.insert(name).second) throw WriteError(where + ": the name is given twice");
    if (!t.defined()) throw WriteError(where + ": the tensor is undefined");
    const Dtype* dt = dtype_of(t.scalar_type());
    if (!dt)
      throw WriteError(where + ": dtype " + std::string(c10::toString(t.scalar_type())) + " has no safetensors equivalent");
    const std::uint64_t nbytes = static_cast<std::uint64_t>(t.numel()) * static_cast<std::uint64_t>(dt->size);
    header[name] = {{"dtype", dt->name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    throw WriteError(path + ": cannot write: a tensor name or metadata string is not valid UTF-8");
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data start 8-byte aligned, as the reference pads
  if (text.size() > kMaxHeaderBytes)
    throw WriteError(path + ": cannot write: the header would be " + std::to_string(text.size()) +
                     " bytes, more than readers accept (" + std::to_string(kMaxHeaderBytes) + ")");

  write_atomic_with(path, [&](const std::string& tmp) {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw std::system_error(errno, std::generic_category());
    int error = 0;
    auto put = [&](const void* data, std::size_t n) {
      if (!error && n && std::fwrite(data, 1, n, f) != n) error = errno ? errno : EIO;
    };
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(std::uint64_t(text.size()) >> (8 * i));
    put(len, 8);
    put(text.data(), text.size());
    for (const auto& entry : tensors) {
      torch::Tensor c = entry.second.detach().to(torch::kCPU).contiguous();  // one tensor at a time
      put(c.data_ptr(), static_cast<std::size_t>(c.numel()) * c.element_size());
    }
    if (std::fclose(f) != 0 && !error) error = errno ? errno : EIO;
    if (error) throw std::system_error(error, std::generic_category());
  });
}

namespace {
/// "a, b, c, ... (12 more)": at most `max` items of a list for a one-line message.
std::string list_some(const std::vector<std::string>& items, std::size_t max = 5) {
  std::vector<std::string> shown(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(std::min(max, items.size())));
  std::string s = join(shown, ", ");
  if (items.size() > max) s += ", ... (" + std::to_string(items.size() - max) + " more)";
  return s;
}

}  // namespace

std::string LoadReport::describe() const {
  std::vector<std::string> parts;
  auto quoted = [](const std::vector<std::string>& names) {
    std::vector<std::string> q;
    for (const auto& n : names) q.push_back(quote(n));
    return q;
  };
  if (!missing.empty())
    parts.push_back(std::to_string(missing.size()) + " missing from the file (" + list_some(quoted(missing)) + ")");
  if (!unexpected.empty())
    parts.push_back(std::to_string(unexpected.size()) + " not in the module (" + list_some(quoted(unexpected)) + ")");
  if (!mismatched.empty()) {
    std::vector<std::string> m;
    for (const auto& x : mismatched)
      m.push_back(quote(x.name) + " file " + shape_string(x.file_shape) + " vs module " + shape_string(x.module_shape));
    parts.push_back(std::to_string(mismatched.size()) + " with other shapes (" + list_some(m) + ")");
  }
  return join(parts, "; ");
}
LoadReport load_into(const SafetensorsFile& file, torch::nn::Module& module, bool strict,
                     const std::function<std::string(const std::string&)>& rename) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    if (p.value().defined()) targets.emplace(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true))
    if (b.value().defined()) targets.emplace(b.key(), b.value());

  // Check everything first, so that an error leaves the module as it was.
  LoadReport report;
  std::map<std::string, std::string> source;  // module name -> file name
  std::vector<std::pair<std::string, torch::Tensor>> copies;  // file name -> target
  for (const std::string& name : file.names()) {
    const std::string to = rename ? rename(name) : name;
    if (to.empty()) continue;
    if (auto [it, fresh] = source.emplace(to, name); !fresh)
      throw InputError(file.path() + ": tensors " + quote(it->second) + " and " + quote(name) + " are both renamed to " +
                       quote(to));
    auto target = targets.find(to);
    if (target == targets.end()) {
      report.unexpected.push_back(to);
      continue;
    }
    const SafetensorsInfo& info = file.info(name);
    if (info.shape != target->second.sizes().vec()) {
      report.mismatched.push_back({to, info.shape, target->second.sizes().vec()});
      continue;
    }
    result_type(*find_dtype(info.dtype), target->second.scalar_type(),
                file.path() + ": tensor " + quote(name) + " (for " + quote(to) + ")");
    copies.emplace_back(name, target->second);
    report.loaded.push_back(to);
  }
  for (const auto& [name, t] : targets)
    if (!source.count(name)) report.missing.push_back(name);
  std::sort(report.loaded.begin(), report.loaded.end());
  std::sort(report.unexpected.begin(), report.unexpected.end());
  std::sort(report.mismatched.begin(), report.mismatched.end(),
            [](const LoadReport::Mismatch& a, const LoadReport::Mismatch& b) { return a.name < b.name; });

  if (strict && !report.ok())
    throw InputError(file.path() + ": tensors do not match the module's parameters and buffers: " + report.describe());

  torch::NoGradGuard no_grad;
  for (auto& [name, target] : copies) target.copy_(file.get(name, target.scalar_type()));
  return report;
}

}  // namespace clrun
