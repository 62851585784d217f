// IDX reading and writing with zlib.
#include "clrun/data/idx.hpp"

#include <zlib.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "clrun/core/error.hpp"
#include "clrun/io/atomic.hpp"

namespace clrun {

std::string read_maybe_gzip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open file");
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (raw.size() < 2 || static_cast<unsigned char>(raw[0]) != 0x1f ||
      static_cast<unsigned char>(raw[1]) != 0x8b)
    return raw;
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error("zlib init failed");
  zs.next_in = reinterpret_cast<Bytef*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  std::string out;
  out.resize(raw.size() * 4 + 1024);
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.total_out >= out.size()) out.resize(out.size() * 2);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + zs.total_out);
    zs.avail_out = static_cast<uInt>(out.size() - zs.total_out);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) break;  // truncated input
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      inflateEnd(&zs);
      throw InputError(path + ": corrupt gzip data");
    }
  }
  std::size_t n = zs.total_out;
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) throw InputError(path + ": truncated gzip data");
  out.resize(n);
  return out;
}

torch::Tensor read_idx(const std::string& path) {
  std::string data = read_maybe_gzip(path);
  auto bytes = reinterpret_cast<const unsigned char*>(data.data());
  if (data.size() < 4 || bytes[0] != 0 || bytes[1] != 0)
    throw InputError(path + ": not an IDX file (bad magic number)");
  if (bytes[2] != 0x08)
    throw InputError(path + ": IDX element type 0x" + std::to_string(bytes[2]) +
                     " is not supported (expected 0x08, unsigned bytes)");
  int rank = bytes[3];
  if (rank < 1 || data.size() < 4 + 4 * static_cast<std::size_t>(rank))
    throw InputError(path + ": truncated IDX header");
  std::vector<int64_t> dims(rank);
  int64_t count = 1;
  for (int d = 0; d < rank; ++d) {
    const unsigned char* p = bytes + 4 + 4 * d;
    dims[d] = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | int64_t(p[3]);
    count *= dims[d];
  }
  std::size_t offset = 4 + 4 * static_cast<std::size_t>(rank);
  if (data.size() - offset != static_cast<std::size_t>(count))
    throw InputError(path + ": IDX header promises " + std::to_string(count) + " bytes of data, file has " +
                     std::to_string(data.size() - offset));
  torch::Tensor t = torch::empty(dims, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), bytes + offset, static_cast<std::size_t>(count));
  return t;
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
