// Helpers shared by the common/data tests: scratch directories and writing plain, gzip and IDX
// files. Test-only; not thread-safe.
#ifndef TESSERA_COMMON_DATA_TEST_UTIL_H_
#define TESSERA_COMMON_DATA_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/data/dataset.h"

namespace tessera::data::test_util {

// A fresh directory under ::testing::TempDir(), removed with its contents on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& dir() const { return dir_; }
  // dir() + "/" + name.
  std::string Path(absl::string_view name) const;

 private:
  std::string dir_;
};

// Writes `contents` to `path` (replacing it); reports a test failure on error.
void WriteFile(const std::string& path, absl::string_view contents);

// `contents` compressed as one gzip member (zlib's deflate with the gzip wrapper).
std::string GzipBytes(absl::string_view contents, int level = 6);

// Writes `contents` gzip-compressed with zlib's gzopen/gzwrite.
void WriteGzipFile(const std::string& path, absl::string_view contents);

// The bytes of an IDX file: big-endian `magic`, then `dims`, then `data`.
std::string IdxBytes(uint32_t magic, const std::vector<uint32_t>& dims, absl::string_view data);

// Examples of `b` appended to `a` (sparse datasets; num_features becomes the larger one).
Dataset Concat(const Dataset& a, const Dataset& b);

}  // namespace tessera::data::test_util

#endif  // TESSERA_COMMON_DATA_TEST_UTIL_H_
