#include "common/data/file_source.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tessera::data::internal {
namespace {

constexpr size_t kGzipInputBytes = 256 << 10;
constexpr size_t kSkipBufferBytes = 256 << 10;

// read(2) that retries on EINTR.
ssize_t ReadRetry(int fd, char* buf, size_t n) {
  while (true) {
    ssize_t r = ::read(fd, buf, n);
    if (r >= 0 || errno != EINTR) return r;
  }
}

class PlainSource : public Source {
 public:
  PlainSource(std::string path, int fd, uint64_t file_size)
      : Source(std::move(path), fd, /*is_gzip=*/false, file_size) {}

  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    ssize_t r = ReadRetry(fd(), buf, n);
    if (r < 0) return ErrnoError(errno, path());
    return static_cast<size_t>(r);
  }

  absl::StatusOr<uint64_t> Skip(uint64_t n) override {
    off_t here = ::lseek(fd(), 0, SEEK_CUR);
    if (here < 0) return Source::Skip(n);  // not seekable: read and discard
    uint64_t pos = static_cast<uint64_t>(here);
    uint64_t target = pos + std::min(n, file_size() > pos ? file_size() - pos : 0);
    if (::lseek(fd(), static_cast<off_t>(target), SEEK_SET) < 0) return ErrnoError(errno, path());
    return target - pos;
  }
};

class GzipSource : public Source {
 public:
  GzipSource(std::string path, int fd, uint64_t file_size)
      : Source(std::move(path), fd, /*is_gzip=*/true, file_size), input_(new char[kGzipInputBytes]) {}

  ~GzipSource() override {
    if (initialized_) inflateEnd(&strm_);
  }

  absl::Status Init() {
    std::memset(&strm_, 0, sizeof(strm_));
    int ret = inflateInit2(&strm_, 16 + MAX_WBITS);  // 16: gzip wrapper only
    if (ret != Z_OK) {
      return absl::ResourceExhaustedError(absl::StrCat(path(), ": cannot initialize zlib (", ret, ")"));
    }
    initialized_ = true;
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    if (done_ || n == 0) return 0;
    strm_.next_out = reinterpret_cast<Bytef*>(buf);
    // zlib counts in uInt; larger requests simply return short.
    strm_.avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    const uInt requested = strm_.avail_out;
    while (strm_.avail_out > 0) {
      if (strm_.avail_in == 0 && !input_eof_) {
        absl::Status s = FillInput();
        if (!s.ok()) return s;
      }
      if (between_members_) {
        if (strm_.avail_in == 0) {
          if (input_eof_) {
            done_ = true;
            break;
          }
          continue;
        }
        // Concatenated gzip members form one stream (as gzip -d treats them). Anything else after
        // a member fails the header check below.
        if (members_ > 0 && inflateReset(&strm_) != Z_OK) return Corrupt("inflateReset failed");
        between_members_ = false;
      }
      int ret = inflate(&strm_, Z_NO_FLUSH);
      if (ret == Z_STREAM_END) {
        between_members_ = true;
        ++members_;
        continue;
      }
      if (ret == Z_OK) continue;
      if (ret == Z_BUF_ERROR && strm_.avail_in == 0) {
        if (input_eof_) {
          return absl::DataLossError(absl::StrCat(path(), ": truncated gzip data (unexpected end of file after ",
                                                  file_size(), " compressed bytes)"));
        }
        continue;
      }
      if (ret == Z_MEM_ERROR) {
        return absl::ResourceExhaustedError(absl::StrCat(path(), ": out of memory in zlib"));
      }
      return Corrupt(strm_.msg != nullptr ? strm_.msg : absl::StrCat("zlib error ", ret));
    }
    return static_cast<size_t>(requested - strm_.avail_out);
  }

 private:
  absl::Status Corrupt(absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path(), ": corrupt gzip data (", what, ")"));
  }

  absl::Status FillInput() {
    ssize_t r = ReadRetry(fd(), input_.get(), kGzipInputBytes);
    if (r < 0) return ErrnoError(errno, path());
    if (r == 0) input_eof_ = true;
    strm_.next_in = reinterpret_cast<Bytef*>(input_.get());
    strm_.avail_in = static_cast<uInt>(r);
    return absl::OkStatus();
  }

  std::unique_ptr<char[]> input_;
  z_stream strm_;
  bool initialized_ = false;
  bool input_eof_ = false;
  bool between_members_ = true;
  bool done_ = false;
  int members_ = 0;
};

}  // namespace

absl::Status ErrnoError(int err, absl::string_view path) { return absl::ErrnoToStatus(err, path); }

Source::Source(std::string path, int fd, bool is_gzip, uint64_t file_size)
    : path_(std::move(path)), fd_(fd), is_gzip_(is_gzip), file_size_(file_size) {}

Source::~Source() { ::close(fd_); }

absl::StatusOr<std::unique_ptr<Source>> Source::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, path);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory"));
  }
  unsigned char magic[2] = {0, 0};
  ssize_t got = ::pread(fd, magic, 2, 0);
  if (got < 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, path);
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    auto source = std::make_unique<GzipSource>(path, fd, size);
    absl::Status s = source->Init();
    if (!s.ok()) return s;
    return std::unique_ptr<Source>(std::move(source));
  }
  return std::unique_ptr<Source>(std::make_unique<PlainSource>(path, fd, size));
}

absl::StatusOr<uint64_t> Source::Skip(uint64_t n) {
  std::unique_ptr<char[]> scratch(new char[kSkipBufferBytes]);
  uint64_t skipped = 0;
  while (skipped < n) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(n - skipped, kSkipBufferBytes));
    absl::StatusOr<size_t> got = Read(scratch.get(), want);
    if (!got.ok()) return got.status();
    if (*got == 0) break;
    skipped += *got;
  }
  return skipped;
}

absl::StatusOr<size_t> ReadFull(Source& source, char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    absl::StatusOr<size_t> got = source.Read(buf + done, n - done);
    if (!got.ok()) return got.status();
    if (*got == 0) break;
    done += *got;
  }
  return done;
}

}  // namespace tessera::data::internal
