// Splitting a data set into chunks, the units of work handed out as data leases: byte ranges of
// plain libsvm files (read with ReadLibsvm's range semantics), example ranges of IDX files (read
// with ReadIdx), and whole gzip libsvm files. Also glob expansion of input file patterns.
//
// Thread-safety: the functions keep no shared state; concurrent calls are safe.
#ifndef TESSERA_COMMON_DATA_CHUNKS_H_
#define TESSERA_COMMON_DATA_CHUNKS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::data {

struct Chunk {
  std::string path;         // libsvm file, or IDX images file
  std::string labels_path;  // IDX labels file; empty for libsvm
  // libsvm plain: byte range [begin, end) for ReadLibsvm. libsvm gzip: [0, UINT64_MAX), the whole
  // file. IDX: example range [begin, end) for ReadIdx.
  uint64_t begin = 0;
  uint64_t end = 0;

  bool operator==(const Chunk& o) const {
    return path == o.path && labels_path == o.labels_path && begin == o.begin && end == o.end;
  }
};

// Cuts each plain file into about ceil(size / target_chunk_bytes) byte ranges of nearly equal size
// that tile [0, size): reading every chunk with ReadLibsvm reads each line exactly once. Ranges are
// not line-aligned, and a range inside one long line reads no examples. Each gzip file (detected by
// magic bytes) is one chunk. Empty files give no chunks. Chunks come in file order, then offset
// order. NOT_FOUND names a missing file; INVALID_ARGUMENT if target_chunk_bytes is 0. Reads only
// file sizes and the first two bytes of each file.
absl::StatusOr<std::vector<Chunk>> SplitLibsvm(const std::vector<std::string>& files, uint64_t target_chunk_bytes);

// Cuts the examples of an IDX images/labels pair into ranges of examples_per_chunk examples (the
// last one may be shorter). Reads only the headers. Errors as for IdxCount, plus INVALID_ARGUMENT
// if the counts differ or examples_per_chunk is 0.
absl::StatusOr<std::vector<Chunk>> SplitIdx(const std::string& images_path, const std::string& labels_path,
                                            uint64_t examples_per_chunk);

// Expands a glob(3) pattern (`*`, `?`, `[...]`, no `~` or braces) to the matching paths, sorted
// bytewise. A plain path that exists is returned as is. NOT_FOUND naming the pattern when nothing
// matches (including a plain path that does not exist). Blocks on the file system.
absl::StatusOr<std::vector<std::string>> ExpandGlob(const std::string& pattern);

}  // namespace tessera::data

#endif  // TESSERA_COMMON_DATA_CHUNKS_H_
