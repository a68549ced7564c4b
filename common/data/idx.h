// Reader for IDX files, the format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/):
// a big-endian header (magic 0x00000803 and [count, rows, cols] for unsigned-byte images; magic
// 0x00000801 and [count] for unsigned-byte labels) followed by the bytes. Files may be plain or gzip
// (detected by the magic bytes 1f 8b, not the name).
//
// Thread-safety: the functions keep no shared state; concurrent calls are safe.
#ifndef TESSERA_COMMON_DATA_IDX_H_
#define TESSERA_COMMON_DATA_IDX_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/data/dataset.h"

namespace tessera::data {

// Reads examples [begin, min(end, count)) into a DENSE Dataset: num_features = rows * cols, pixels
// scaled to [0, 1] (byte / 255), labels as floats (0..9 for MNIST; other byte values pass through).
// An empty range (begin >= count) gives an empty Dataset with num_features set.
//
// Errors, each naming the offending file:
//   NOT_FOUND          a file does not exist.
//   INVALID_ARGUMENT   bad magic ("<file>: bad IDX magic 0x... (expected 0x00000803 for images)"),
//                      image and label counts differ, zero-sized images, begin > end; a plain file
//                      that is shorter ("<file>: truncated: expected N bytes of image data, found
//                      M") or longer than its header says.
//   DATA_LOSS          truncated or corrupt gzip data.
// Plain files have their sizes checked in full up front. For gzip files only the data up to the
// requested range is decompressed, so damage past it is found only by reads that reach it (a read
// that ends at the last example also checks the trailer). Blocks on file I/O.
absl::StatusOr<Dataset> ReadIdx(const std::string& images_path, const std::string& labels_path, uint64_t begin = 0,
                                uint64_t end = UINT64_MAX);

// The example count in the header of an IDX images or labels file, without reading the data (a
// few bytes are decompressed for gzip files). Errors as for ReadIdx. Blocks on file I/O.
absl::StatusOr<uint64_t> IdxCount(const std::string& path);

}  // namespace tessera::data

#endif  // TESSERA_COMMON_DATA_IDX_H_
