#include "common/data/chunks.h"

#include <errno.h>
#include <glob.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/data/file_source.h"
#include "common/data/idx.h"

namespace tessera::data {

absl::StatusOr<std::vector<Chunk>> SplitLibsvm(const std::vector<std::string>& files, uint64_t target_chunk_bytes) {
  if (target_chunk_bytes == 0) {
    return absl::InvalidArgumentError("SplitLibsvm: target_chunk_bytes must be positive");
  }
  std::vector<Chunk> chunks;
  for (const std::string& path : files) {
    absl::StatusOr<std::unique_ptr<internal::Source>> source = internal::Source::Open(path);
    if (!source.ok()) return source.status();
    if ((*source)->is_gzip()) {
      chunks.push_back(Chunk{path, "", 0, UINT64_MAX});
      continue;
    }
    const uint64_t size = (*source)->file_size();
    if (size == 0) continue;
    const uint64_t n = size / target_chunk_bytes + (size % target_chunk_bytes != 0 ? 1 : 0);
    // Boundary i is floor(i * size / n), computed without overflowing 64 bits.
    const uint64_t q = size / n;
    const uint64_t r = size % n;
    uint64_t begin = 0;
    for (uint64_t i = 1; i <= n; ++i) {
      const uint64_t end = i * q + (i * r) / n;
      chunks.push_back(Chunk{path, "", begin, end});
      begin = end;
    }
  }
  return chunks;
}

absl::StatusOr<std::vector<Chunk>> SplitIdx(const std::string& images_path, const std::string& labels_path,
                                            uint64_t examples_per_chunk) {
  if (examples_per_chunk == 0) {
    return absl::InvalidArgumentError("SplitIdx: examples_per_chunk must be positive");
  }
  absl::StatusOr<uint64_t> images = IdxCount(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<uint64_t> labels = IdxCount(labels_path);
  if (!labels.ok()) return labels.status();
  if (*images != *labels) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, ": has ", *images, " images but ", labels_path, " has ", *labels, " labels"));
  }
  std::vector<Chunk> chunks;
  for (uint64_t begin = 0; begin < *images; begin += examples_per_chunk) {
    chunks.push_back(Chunk{images_path, labels_path, begin, begin + std::min(examples_per_chunk, *images - begin)});
  }
  return chunks;
}

absl::StatusOr<std::vector<std::string>> ExpandGlob(const std::string& pattern) {
  glob_t g;
  int ret = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> paths;
  if (ret == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
  }
  ::globfree(&g);
  switch (ret) {
    case 0:
      break;
    case GLOB_NOMATCH:
      if (pattern.find_first_of("*?[") == std::string::npos) {
        return absl::NotFoundError(absl::StrCat(pattern, ": No such file or directory"));
      }
      return absl::NotFoundError(absl::StrCat(pattern, ": no files match this pattern"));
    case GLOB_NOSPACE:
      return absl::ResourceExhaustedError(absl::StrCat(pattern, ": out of memory in glob"));
    default:
      return absl::UnavailableError(absl::StrCat(pattern, ": read error while expanding glob"));
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace tessera::data
