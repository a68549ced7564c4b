// File helpers for checkpoints: durable atomic writes (temp file + fsync + rename + fsync of the
// directory), sequential reads that report short reads, directory creation and listing.
//
// Every error is an absl::Status whose message names the path and the failed operation, with the
// code derived from errno (NOT_FOUND for a missing file, PERMISSION_DENIED, RESOURCE_EXHAUSTED for
// a full disk, ...). All functions block on disk I/O. Thread-safety: the free functions are
// thread-safe; one AtomicFileWriter or SequentialFileReader must not be used by two threads at once.
#ifndef TESSERA_SERVER_CHECKPOINT_FILE_UTIL_H_
#define TESSERA_SERVER_CHECKPOINT_FILE_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tessera::server {

// Writes a file so that a crash leaves either the old file or the complete new one under `path`,
// never a mix: data goes to "<path>.tmp-<pid>-<n>", which Commit() fsyncs, renames over `path`
// and makes durable by fsyncing the directory. Destroying an uncommitted writer removes the
// temporary file.
class AtomicFileWriter {
 public:
  // Creates (truncates) the temporary file next to `path`; the directory must exist.
  static absl::StatusOr<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends bytes (buffered; large appends are written straight through).
  absl::Status Append(absl::string_view data);
  // Bytes appended so far.
  uint64_t size() const { return size_; }
  // Flushes, fsyncs and closes the temporary file, renames it to the final path and fsyncs the
  // directory. After an error the temporary file is removed and `path` is left as it was.
  absl::Status Commit();

  const std::string& path() const { return path_; }

 private:
  AtomicFileWriter(std::string path, std::string temp_path, int fd);
  absl::Status Flush();
  absl::Status WriteAll(const char* data, size_t n);
  void Abort();

  const std::string path_;
  const std::string temp_path_;
  int fd_;
  std::string buffer_;
  uint64_t size_ = 0;
  bool committed_ = false;
};

// Reads a file front to back. Read() returns fewer bytes than asked only at the end of the file,
// so callers can tell a truncated file from an I/O error.
class SequentialFileReader {
 public:
  static absl::StatusOr<std::unique_ptr<SequentialFileReader>> Open(const std::string& path);
  ~SequentialFileReader();
  SequentialFileReader(const SequentialFileReader&) = delete;
  SequentialFileReader& operator=(const SequentialFileReader&) = delete;

  // Replaces *out with the next min(n, remaining) bytes.
  absl::Status Read(size_t n, std::string* out);
  // File size when opened, and the current read position.
  uint64_t size() const { return size_; }
  uint64_t position() const { return position_; }
  const std::string& path() const { return path_; }

 private:
  SequentialFileReader(std::string path, int fd, uint64_t size);

  const std::string path_;
  const int fd_;
  const uint64_t size_;
  uint64_t position_ = 0;
};

// Writes `contents` to `path` with an AtomicFileWriter.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);
// The whole file; NOT_FOUND if it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);
// Creates `path` and its missing parents (like mkdir -p), fsyncing each parent that gained an
// entry. OK if the directory exists; FAILED_PRECONDITION if a component is not a directory.
absl::Status CreateDirectories(const std::string& path);
// fsyncs a directory, making renames and creations inside it durable.
absl::Status SyncDirectory(const std::string& path);
// Names of the entries of a directory (without "." and ".."), sorted; NOT_FOUND if it is missing.
absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path);
// Removes a file; NOT_FOUND if it does not exist.
absl::Status RemoveFile(const std::string& path);
// Removes a file or a directory tree; OK if nothing is there.
absl::Status RemoveAll(const std::string& path);
// True if `path` exists (any type); errors other than "does not exist" are returned.
absl::StatusOr<bool> PathExists(const std::string& path);
// "a/b/c" -> "a/b"; "c" -> "."; "/c" -> "/".
std::string DirName(const std::string& path);

}  // namespace tessera::server

#endif  // TESSERA_SERVER_CHECKPOINT_FILE_UTIL_H_
