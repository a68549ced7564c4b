// Internal to common/data: a byte source over a data file that is either plain or gzip-compressed
// (detected by the magic bytes 1f 8b, never by the file name). The readers in libsvm.h, idx.h and
// chunks.h sit on top of it; nothing outside common/data should include this header.
//
// Thread-safety: a Source is not synchronized; use one per thread. Distinct Sources over the same
// file are independent.
#ifndef TESSERA_COMMON_DATA_FILE_SOURCE_H_
#define TESSERA_COMMON_DATA_FILE_SOURCE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tessera::data::internal {

// "<path>: <strerror(err)>" with the canonical code for `err` (ENOENT -> NOT_FOUND, ...).
absl::Status ErrnoError(int err, absl::string_view path);

class Source {
 public:
  // Opens `path` for reading from its first (uncompressed) byte. NOT_FOUND if it does not exist,
  // INVALID_ARGUMENT for a directory. Blocks on the file system.
  static absl::StatusOr<std::unique_ptr<Source>> Open(const std::string& path);

  virtual ~Source();
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  const std::string& path() const { return path_; }
  bool is_gzip() const { return is_gzip_; }
  // Bytes on disk (the compressed size for gzip files).
  uint64_t file_size() const { return file_size_; }

  // Reads up to `n` bytes of (uncompressed) data into `buf`. Returns 0 only at the end of the
  // data. Truncated or corrupt gzip data is DATA_LOSS naming the file, never a short read.
  virtual absl::StatusOr<size_t> Read(char* buf, size_t n) = 0;

  // Skips `n` bytes of (uncompressed) data, or to the end if fewer remain. Returns how many bytes
  // were skipped. Plain files seek; gzip files decompress and discard.
  virtual absl::StatusOr<uint64_t> Skip(uint64_t n);

 protected:
  Source(std::string path, int fd, bool is_gzip, uint64_t file_size);
  int fd() const { return fd_; }

 private:
  std::string path_;
  int fd_;
  bool is_gzip_;
  uint64_t file_size_;
};

// Reads until `n` bytes have arrived or the data ends; returns the number of bytes read.
absl::StatusOr<size_t> ReadFull(Source& source, char* buf, size_t n);

}  // namespace tessera::data::internal

#endif  // TESSERA_COMMON_DATA_FILE_SOURCE_H_
