// IDX reading and writing with zlib.
#include "clrun/data/idx.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "clrun/core/error.hpp"
#include "clrun/io/atomic.hpp"

namespace clrun {

namespace {

bool has_gzip_magic(std::string_view raw) {
  return raw.size() >= 2 && static_cast<unsigned char>(raw[0]) == 0x1f && static_cast<unsigned char>(raw[1]) == 0x8b;
}

/// deflate's best case is ~1032:1, so a gzip file of n bytes inflates to at most about 1032 n.
constexpr std::uint64_t kMaxDeflateRatio = 1032;

std::string human_bytes(std::uint64_t n) {
  if (n % (std::uint64_t(1) << 30) == 0) return std::to_string(n >> 30) + " GiB";
  return std::to_string(n) + " bytes";
}

/// Inflates gzip data incrementally, member after member (`cat a.gz b.gz`); bytes after the last
/// member that do not start another one are ignored, as gzip does. Errors are InputErrors.
class Gunzip {
 public:
  Gunzip(std::string_view in, const std::string& name) : in_(in), name_(name) {
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error("zlib: inflateInit2 failed");
  }
  ~Gunzip() { inflateEnd(&zs_); }
  Gunzip(const Gunzip&) = delete;
  Gunzip& operator=(const Gunzip&) = delete;

  /// Up to `n` bytes into `dst`; fewer only at the end of the data.
  std::size_t read(unsigned char* dst, std::size_t n) {
    constexpr std::size_t chunk = std::size_t(1) << 30;  // zlib counts in 32 bits
    std::size_t got = 0;
    while (got < n && !done_) {
      if (zs_.avail_in == 0 && pos_ < in_.size()) {
        std::size_t m = std::min(chunk, in_.size() - pos_);
        zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in_.data() + pos_));
        zs_.avail_in = static_cast<uInt>(m);
        pos_ += m;
      }
      std::size_t want = std::min(chunk, n - got);
      zs_.next_out = dst + got;
      zs_.avail_out = static_cast<uInt>(want);
      int rc = inflate(&zs_, Z_NO_FLUSH);
      got += want - zs_.avail_out;
      if (rc == Z_STREAM_END) {
        std::string_view rest = in_.substr(pos_ - zs_.avail_in);
        if (has_gzip_magic(rest)) {
          if (inflateReset(&zs_) != Z_OK) throw InputError(name_ + ": corrupt gzip data");
        } else {
          done_ = true;
        }
      } else if (rc == Z_BUF_ERROR) {
        if (zs_.avail_in == 0 && pos_ == in_.size()) throw InputError(name_ + ": truncated gzip data");
        if (zs_.avail_in != 0) throw InputError(name_ + ": corrupt gzip data");  // no progress possible
      } else if (rc != Z_OK) {
        throw InputError(name_ + ": corrupt gzip data");
      }
    }
    return got;
  }

  /// Reads everything left, failing once it is more than `max_bytes`; `hint` sizes the buffer.
  std::string read_all(std::uint64_t max_bytes, const std::string& too_much, std::size_t hint) {
    std::string out;
    std::size_t size = 0;
    std::size_t cap = static_cast<std::size_t>(std::min<std::uint64_t>(std::max<std::size_t>(hint, 4096), max_bytes + 1));
    for (;;) {
      out.resize(cap);
      size += read(reinterpret_cast<unsigned char*>(out.data()) + size, cap - size);
      if (size < cap || done_) break;
      if (size > max_bytes) throw InputError(name_ + ": " + too_much);
      cap = static_cast<std::size_t>(std::min<std::uint64_t>(std::uint64_t(cap) * 2, max_bytes + 1));
    }
    if (size > max_bytes) throw InputError(name_ + ": " + too_much);
    out.resize(size);
    return out;
  }

  bool at_end() {
    unsigned char extra;
    return read(&extra, 1) == 0;
  }

  /// The gzip trailer's ISIZE: the last member's inflated size modulo 2^32 (a hint only).
  std::uint32_t isize() const {
    if (in_.size() < 18) return 0;
    auto p = reinterpret_cast<const unsigned char*>(in_.data() + in_.size() - 4);
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
  }

 private:
  std::string_view in_;
  const std::string& name_;
  std::size_t pos_ = 0;
  z_stream zs_{};
  bool done_ = false;
};

/// Sequential reads from plain bytes or a gzip stream.
class ByteSource {
 public:
  ByteSource(std::string_view raw, const std::string& name) : raw_(raw) {
    if (has_gzip_magic(raw)) gz_.emplace(raw, name);
  }
  bool gzip() const { return gz_.has_value(); }
  std::size_t read(unsigned char* dst, std::size_t n) {
    if (gz_) return gz_->read(dst, n);
    n = std::min(n, raw_.size() - pos_);
    if (n) std::memcpy(dst, raw_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  std::size_t plain_remaining() const { return raw_.size() - pos_; }
  Gunzip& gz() { return *gz_; }

 private:
  std::string_view raw_;
  std::size_t pos_ = 0;
  std::optional<Gunzip> gz_;
};

}  // namespace

std::string gunzip(std::string_view gz, const std::string& name, std::uint64_t max_bytes) {
  Gunzip inflater(gz, name);
  return inflater.read_all(max_bytes, "gzip data inflates to more than " + human_bytes(max_bytes) + " (the limit)",
                           gz.size() * 4);
}

std::string read_maybe_gzip(const std::string& path, std::uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open file");
  std::error_code ec;
  std::uint64_t file_size = std::filesystem::file_size(path, ec);
  if (!ec && file_size > max_bytes)
    throw InputError(path + ": " + std::to_string(file_size) + " bytes, more than the limit of " + human_bytes(max_bytes));
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!has_gzip_magic(raw)) return raw;
  return gunzip(raw, path, max_bytes);
}

torch::Tensor parse_idx(std::string_view bytes, const std::string& name) {
  ByteSource src(bytes, name);
  unsigned char head[4 + 4 * 255];
  if (src.read(head, 4) < 4 || head[0] != 0 || head[1] != 0)
    throw InputError(name + ": not an IDX file (bad magic number)");
  if (head[2] != 0x08)
    throw InputError(name + ": IDX element type 0x" + std::to_string(head[2]) +
                     " is not supported (expected 0x08, unsigned bytes)");
  const int rank = head[3];
  if (rank < 1 || src.read(head + 4, 4 * static_cast<std::size_t>(rank)) < 4 * static_cast<std::size_t>(rank))
    throw InputError(name + ": truncated IDX header");
  // Sizes are checked before anything is allocated: each below 2^31 (IDX sizes are signed 32-bit)
  // and their product (zero sizes counted as one, so no shape overflows) at most kMaxIdxBytes.
  std::vector<int64_t> dims(rank);
  std::uint64_t count = 1, extent = 1;
  std::string shape;
  for (int d = 0; d < rank; ++d) {
    const unsigned char* p = head + 4 + 4 * d;
    dims[d] = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | int64_t(p[3]);
    shape += (d ? "x" : "") + std::to_string(dims[d]);
    if (p[0] & 0x80) throw InputError(name + ": IDX dimension " + std::to_string(d) + " is negative");
    const std::uint64_t dim = static_cast<std::uint64_t>(dims[d]);
    if (dim > 1 && extent > kMaxIdxBytes / dim)
      throw InputError(name + ": IDX sizes " + shape + (d + 1 < rank ? "x..." : "") + " make more than " +
                       human_bytes(kMaxIdxBytes) + " of data (the limit)");
    extent *= std::max<std::uint64_t>(dim, 1);
    count *= dim;
  }
  auto promises = [&](const std::string& has) {
    return InputError(name + ": IDX header promises " + std::to_string(count) + " bytes of data, file has " + has);
  };
  torch::Tensor t;
  if (!src.gzip()) {
    if (src.plain_remaining() != count) throw promises(std::to_string(src.plain_remaining()));
    t = torch::empty(dims, torch::kUInt8);
    src.read(t.data_ptr<uint8_t>(), count);
    return t;
  }
  Gunzip& gz = src.gz();
  if (count > kMaxDeflateRatio * bytes.size() + 1024)
    throw promises("only " + std::to_string(bytes.size()) + " gzip bytes (deflate inflates at most ~1032:1)");
  const std::uint64_t total = 4 + 4 * static_cast<std::uint64_t>(rank) + count;
  if (static_cast<std::uint32_t>(total) == gz.isize()) {
    // The usual case, the trailer agrees with the header: inflate straight into the tensor.
    t = torch::empty(dims, torch::kUInt8);
    std::size_t got = gz.read(t.data_ptr<uint8_t>(), count);
    if (got < count) throw promises(std::to_string(got));
    if (!gz.at_end()) throw promises("more");
    return t;
  }
  // The trailer disagrees (a wrong header, or several gzip members): read what is there, at
  // most one byte more than promised, then check.
  std::string data = gz.read_all(count, "IDX header promises " + std::to_string(count) + " bytes of data, file has more",
                                 static_cast<std::size_t>(std::min<std::uint64_t>(count + 1, bytes.size() * 4)));
  if (data.size() != count) throw promises(std::to_string(data.size()));
  t = torch::empty(dims, torch::kUInt8);
  if (count) std::memcpy(t.data_ptr<uint8_t>(), data.data(), count);
  return t;
}

torch::Tensor read_idx(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open file");
  std::error_code ec;
  std::uint64_t file_size = std::filesystem::file_size(path, ec);
  if (!ec && file_size > kMaxIdxBytes + 4 + 4 * 255)
    throw InputError(path + ": " + std::to_string(file_size) + " bytes, more than an IDX file may hold (" +
                     human_bytes(kMaxIdxBytes) + ")");
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_idx(raw, path);
}

void write_idx(const std::string& path, const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kUInt8).contiguous();
  std::string out = {0, 0, 0x08, static_cast<char>(c.dim())};
  for (int64_t d : c.sizes())
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((d >> shift) & 0xff));
  out.append(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<std::size_t>(c.numel()));
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
    uLongf cap = compressBound(out.size()) + 64;
    std::string gz(cap, '\0');
    z_stream zs{};
    deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    zs.next_in = reinterpret_cast<Bytef*>(out.data());
    zs.avail_in = static_cast<uInt>(out.size());
    zs.next_out = reinterpret_cast<Bytef*>(gz.data());
    zs.avail_out = static_cast<uInt>(gz.size());
    deflate(&zs, Z_FINISH);
    gz.resize(zs.total_out);
    deflateEnd(&zs);
    out = std::move(gz);
  }
  write_file_atomic(path, out);
}

}  // namespace clrun
