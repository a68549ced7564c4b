#include "common/data/test_util.h"

#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace tessera::data::test_util {

ScratchDir::ScratchDir() {
  std::string tmpl = ::testing::TempDir();
  if (tmpl.empty() || tmpl.back() != '/') tmpl += '/';
  tmpl += "tessera_data_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::strerror(errno);
  }
  dir_ = buf.data();
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string ScratchDir::Path(absl::string_view name) const { return absl::StrCat(dir_, "/", name); }

void WriteFile(const std::string& path, absl::string_view contents) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path << ": " << std::strerror(errno);
  size_t written = std::fwrite(contents.data(), 1, contents.size(), f);
  int closed = std::fclose(f);
  ASSERT_EQ(written, contents.size()) << path;
  ASSERT_EQ(closed, 0) << path;
}

std::string GzipBytes(absl::string_view contents, int level) {
  z_stream strm;
  std::memset(&strm, 0, sizeof(strm));
  EXPECT_EQ(deflateInit2(&strm, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&strm, contents.size()) + 64, '\0');
  strm.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(contents.data()));
  strm.avail_in = static_cast<uInt>(contents.size());
  strm.next_out = reinterpret_cast<Bytef*>(out.data());
  strm.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&strm, Z_FINISH), Z_STREAM_END);
  out.resize(strm.total_out);
  deflateEnd(&strm);
  return out;
}

void WriteGzipFile(const std::string& path, absl::string_view contents) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  // gzwrite takes unsigned lengths; write in pieces.
  size_t done = 0;
  while (done < contents.size()) {
    unsigned n = static_cast<unsigned>(std::min<size_t>(contents.size() - done, 1u << 20));
    ASSERT_EQ(gzwrite(f, contents.data() + done, n), static_cast<int>(n)) << path;
    done += n;
  }
  ASSERT_EQ(gzclose(f), Z_OK) << path;
}

std::string IdxBytes(uint32_t magic, const std::vector<uint32_t>& dims, absl::string_view data) {
  std::string out;
  auto put = [&out](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  out.append(data.data(), data.size());
  return out;
}

Dataset Concat(const Dataset& a, const Dataset& b) {
  Dataset out = a;
  if (out.offsets.empty()) out.offsets.push_back(0);
  out.num_features = std::max(a.num_features, b.num_features);
  out.labels.insert(out.labels.end(), b.labels.begin(), b.labels.end());
  out.ids.insert(out.ids.end(), b.ids.begin(), b.ids.end());
  out.values.insert(out.values.end(), b.values.begin(), b.values.end());
  const uint64_t shift = a.offsets.empty() ? 0 : a.offsets.back();
  for (size_t i = 1; i < b.offsets.size(); ++i) out.offsets.push_back(b.offsets[i] + shift);
  return out;
}

}  // namespace tessera::data::test_util
