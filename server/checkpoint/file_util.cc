#include "server/checkpoint/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace tessera::server {
namespace {

constexpr size_t kWriteBuffer = size_t{1} << 20;

absl::Status ErrnoError(int err, absl::string_view op, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(op, " ", path));
}

// Distinguishes temporary files of concurrent writers in one process.
std::atomic<uint64_t> temp_counter{0};

}  // namespace

std::string DirName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// ---------------------------------------------------------------------------------------------
// AtomicFileWriter

AtomicFileWriter::AtomicFileWriter(std::string path, std::string temp_path, int fd)
    : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {
  buffer_.reserve(kWriteBuffer);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) Abort();
}

absl::StatusOr<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(const std::string& path) {
  std::string temp = absl::StrCat(path, ".tmp-", getpid(), "-", temp_counter.fetch_add(1));
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "create", temp);
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, std::move(temp), fd));
}

void AtomicFileWriter::Abort() {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  unlink(temp_path_.c_str());
}

absl::Status AtomicFileWriter::WriteAll(const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd_, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "write", temp_path_);
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Flush() {
  if (buffer_.empty()) return absl::OkStatus();
  absl::Status s = WriteAll(buffer_.data(), buffer_.size());
  buffer_.clear();
  return s;
}

absl::Status AtomicFileWriter::Append(absl::string_view data) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("append to closed file ", temp_path_));
  size_ += data.size();
  if (buffer_.size() + data.size() <= kWriteBuffer) {
    buffer_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status s = Flush();
  if (!s.ok()) return s;
  if (data.size() >= kWriteBuffer / 2) return WriteAll(data.data(), data.size());
  buffer_.append(data.data(), data.size());
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("commit of closed file ", temp_path_));
  absl::Status s = Flush();
  if (s.ok() && fsync(fd_) != 0) s = ErrnoError(errno, "fsync", temp_path_);
  if (s.ok()) {
    const int fd = fd_;
    fd_ = -1;
    if (close(fd) != 0) s = ErrnoError(errno, "close", temp_path_);
  }
  if (s.ok() && rename(temp_path_.c_str(), path_.c_str()) != 0) {
    s = ErrnoError(errno, absl::StrCat("rename ", temp_path_, " to"), path_);
  }
  if (!s.ok()) {
    Abort();
    return s;
  }
  committed_ = true;
  return SyncDirectory(DirName(path_));
}

// ---------------------------------------------------------------------------------------------
// SequentialFileReader

SequentialFileReader::SequentialFileReader(std::string path, int fd, uint64_t size)
    : path_(std::move(path)), fd_(fd), size_(size) {}

SequentialFileReader::~SequentialFileReader() { close(fd_); }

absl::StatusOr<std::unique_ptr<SequentialFileReader>> SequentialFileReader::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoError(err, "stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return std::unique_ptr<SequentialFileReader>(new SequentialFileReader(path, fd, static_cast<uint64_t>(st.st_size)));
}

absl::Status SequentialFileReader::Read(size_t n, std::string* out) {
  out->resize(n);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = read(fd_, out->data() + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      out->clear();
      return ErrnoError(err, "read", path_);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out->resize(got);
  position_ += got;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Free functions

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  auto writer = AtomicFileWriter::Create(path);
  if (!writer.ok()) return writer.status();
  absl::Status s = (*writer)->Append(contents);
  if (!s.ok()) return s;
  return (*writer)->Commit();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  auto reader = SequentialFileReader::Open(path);
  if (!reader.ok()) return reader.status();
  std::string out;
  absl::Status s = (*reader)->Read((*reader)->size(), &out);
  if (!s.ok()) return s;
  // The file may have grown since it was opened; read the rest too.
  std::string more;
  do {
    s = (*reader)->Read(size_t{1} << 16, &more);
    if (!s.ok()) return s;
    out += more;
  } while (!more.empty());
  return out;
}

absl::Status SyncDirectory(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open directory", path);
  absl::Status s;
  if (fsync(fd) != 0) s = ErrnoError(errno, "fsync directory", path);
  close(fd);
  return s;
}

absl::Status CreateDirectories(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("directory path is empty");
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    const std::string part = path.substr(0, pos);
    if (part.empty() || part.back() == '/') continue;  // "/" itself, or "a//b"
    if (mkdir(part.c_str(), 0755) == 0) {
      absl::Status s = SyncDirectory(DirName(part));
      if (!s.ok()) return s;
      continue;
    }
    const int err = errno;
    if (err != EEXIST) return ErrnoError(err, "create directory", part);
    struct stat st;
    if (stat(part.c_str(), &st) != 0) return ErrnoError(errno, "stat", part);
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(part, " exists and is not a directory"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return ErrnoError(errno, "open directory", path);
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* e = readdir(dir)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
    errno = 0;
  }
  const int err = errno;
  closedir(dir);
  if (err != 0) return ErrnoError(err, "read directory", path);
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status RemoveFile(const std::string& path) {
  if (unlink(path.c_str()) != 0) return ErrnoError(errno, "remove", path);
  return absl::OkStatus();
}

absl::Status RemoveAll(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return ErrnoError(ec.value(), "remove", path);
  return absl::OkStatus();
}

absl::StatusOr<bool> PathExists(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT || errno == ENOTDIR) return false;
  return ErrnoError(errno, "stat", path);
}

}  // namespace tessera::server
