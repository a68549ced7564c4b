// Reader for libsvm / svmlight text files into a sparse Dataset (see dataset.h).
//
// Format: one example per line, `label index:value index:value ...`, tokens separated by spaces or
// tabs. `#` starts a comment that runs to the end of the line; blank and comment-only lines are
// skipped; CRLF line endings are accepted. Feature indices are integers starting at 1 and are kept
// as written. Within a line, indices may come in any order (the row is sorted by index), but an
// index may not repeat. Values must be finite floats.
//
// Files may be plain text or gzip (detected by the magic bytes 1f 8b, not the name; concatenated
// gzip members are read as one stream).
//
// Thread-safety: ReadLibsvm keeps no shared state; concurrent calls (on the same or different
// files) are safe.
#ifndef TESSERA_COMMON_DATA_LIBSVM_H_
#define TESSERA_COMMON_DATA_LIBSVM_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"

namespace tessera::data {

struct LibsvmOptions {
  // 0: no bound, and Dataset::num_features becomes the largest index seen + 1. Otherwise every
  // index must be in 1..num_features and Dataset::num_features is this value.
  uint64_t num_features = 0;
  // 2: labels must be 0/1 or -1/+1 (any spelling that parses to those numbers, e.g. "+1", "1.0");
  // -1 is stored as 0. K > 2: labels must be integers 0..K-1. Values below 2 are rejected.
  int num_classes = 2;
};

// Reads the examples on the lines of `path` that START at a byte offset in [byte_begin, byte_end)
// of the uncompressed text. With byte_begin > 0, reading starts at the first line start at or after
// byte_begin (the line holding byte byte_begin - 1 belongs to the previous range); a line that
// starts before byte_end is read completely even if it runs past byte_end. So ranges that tile
// [0, file size) read every line exactly once, wherever the boundaries fall.
//
// Gzip files: offsets count bytes of the decompressed stream, so the same tiling holds; reading a
// range decompresses (and discards) everything before it, so gzip files are best read whole
// (SplitLibsvm gives them one chunk). Corruption after the end of the range is not noticed.
//
// Errors (the process is never aborted):
//   NOT_FOUND          the file does not exist ("<path>: No such file or directory").
//   INVALID_ARGUMENT   malformed text, as "<path>:<line>: <what was expected>", with the true line
//                      number in the file even when reading a range; bad options; begin > end.
//   DATA_LOSS          truncated or corrupt gzip data ("<path>: truncated gzip data ...").
// Blocks on file I/O. The returned Dataset is owned by the caller.
absl::StatusOr<Dataset> ReadLibsvm(const std::string& path, const LibsvmOptions& opts, uint64_t byte_begin = 0,
                                   uint64_t byte_end = UINT64_MAX);

}  // namespace tessera::data

#endif  // TESSERA_COMMON_DATA_LIBSVM_H_
