#include "common/data/idx.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/data/file_source.h"

namespace tessera::data {
namespace {

using internal::Source;

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;
constexpr size_t kReadStepBytes = 4 << 20;

struct IdxHeader {
  uint32_t magic = 0;
  uint64_t header_bytes = 0;
  std::array<uint64_t, 3> dims = {0, 0, 0};
};

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string MagicExpectation(uint32_t expected) {
  if (expected == kImagesMagic) return "expected 0x00000803 for images";
  if (expected == kLabelsMagic) return "expected 0x00000801 for labels";
  return "expected 0x00000801 for labels or 0x00000803 for images";
}

// Reads the header of an IDX file whose magic must be `expected`, or either kind if 0.
absl::StatusOr<IdxHeader> ReadHeader(Source& source, uint32_t expected) {
  unsigned char buf[16];
  absl::StatusOr<size_t> got = internal::ReadFull(source, reinterpret_cast<char*>(buf), 4);
  if (!got.ok()) return got.status();
  if (*got < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(source.path(), ": truncated: expected a 4-byte IDX magic number, found ", *got, " bytes"));
  }
  IdxHeader header;
  header.magic = BigEndian32(buf);
  bool ok = expected != 0 ? header.magic == expected : (header.magic == kImagesMagic || header.magic == kLabelsMagic);
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: bad IDX magic 0x%08x (%s)", source.path(), header.magic, MagicExpectation(expected)));
  }
  const size_t num_dims = header.magic & 0xff;
  header.header_bytes = 4 + 4 * num_dims;
  got = internal::ReadFull(source, reinterpret_cast<char*>(buf + 4), 4 * num_dims);
  if (!got.ok()) return got.status();
  if (*got < 4 * num_dims) {
    return absl::InvalidArgumentError(absl::StrCat(source.path(), ": truncated: expected a ", header.header_bytes,
                                                   "-byte IDX header, found ", 4 + *got, " bytes"));
  }
  for (size_t i = 0; i < num_dims; ++i) header.dims[i] = BigEndian32(buf + 4 + 4 * i);
  return header;
}

absl::StatusOr<IdxHeader> OpenIdx(const std::string& path, uint32_t expected, std::unique_ptr<Source>* source) {
  absl::StatusOr<std::unique_ptr<Source>> opened = Source::Open(path);
  if (!opened.ok()) return opened.status();
  *source = std::move(*opened);
  return ReadHeader(**source, expected);
}

absl::Status Truncated(const Source& source, const char* what, uint64_t expected, uint64_t found) {
  return absl::InvalidArgumentError(
      absl::StrCat(source.path(), ": truncated: expected ", expected, " bytes of ", what, " data, found ", found));
}

// Reads items [begin, end) of `item_bytes` bytes each into `out`, from a source positioned just
// after a header declaring `count` items, and checks the file holds exactly that much data.
absl::Status ReadItems(Source& source, uint64_t header_bytes, uint64_t count, uint64_t item_bytes, uint64_t begin,
                       uint64_t end, const char* what, std::vector<unsigned char>* out) {
  uint64_t total = 0;
  if (__builtin_mul_overflow(count, item_bytes, &total) || total > (uint64_t{1} << 48)) {
    return absl::InvalidArgumentError(absl::StrCat(source.path(), ": header declares ", count, " items of ", item_bytes,
                                                   " bytes, which is implausibly large"));
  }
  if (!source.is_gzip()) {
    uint64_t found = source.file_size() - std::min(source.file_size(), header_bytes);
    if (found < total) return Truncated(source, what, total, found);
    if (found > total) {
      return absl::InvalidArgumentError(absl::StrCat(source.path(), ": ", found - total, " unexpected bytes after the ",
                                                     what, " data (header declares ", count, " items)"));
    }
  }
  const uint64_t skip = begin * item_bytes;
  const uint64_t want = (end - begin) * item_bytes;
  absl::StatusOr<uint64_t> skipped = source.Skip(skip);
  if (!skipped.ok()) return skipped.status();
  out->clear();
  if (*skipped == skip) {
    // The header's count is untrusted until the data arrives: for gzip, reserve no more than the
    // file could plausibly inflate to (deflate's ratio is at most ~1032:1) and grow from there.
    const uint64_t plausible =
        source.is_gzip() ? std::min<uint64_t>(1032 * source.file_size() + kReadStepBytes, uint64_t{1} << 30) : want;
    out->reserve(static_cast<size_t>(std::min(want, plausible)));
    while (out->size() < want) {
      const size_t old = out->size();
      const size_t step = static_cast<size_t>(std::min<uint64_t>(want - old, std::max(old, kReadStepBytes)));
      out->resize(old + step);
      absl::StatusOr<size_t> got = internal::ReadFull(source, reinterpret_cast<char*>(out->data() + old), step);
      if (!got.ok()) return got.status();
      out->resize(old + *got);
      if (*got < step) break;
    }
  }
  if (*skipped < skip || out->size() < want) {
    return Truncated(source, what, total, *skipped + out->size());
  }
  if (end == count) {
    // Reading to the end also checks there is nothing more (and, for gzip, the trailer's CRC).
    absl::StatusOr<uint64_t> extra = source.Skip(UINT64_MAX);
    if (!extra.ok()) return extra.status();
    if (*extra > 0) {
      return absl::InvalidArgumentError(absl::StrCat(source.path(), ": ", *extra, " unexpected bytes after the ", what,
                                                     " data (header declares ", count, " items)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Dataset> ReadIdx(const std::string& images_path, const std::string& labels_path, uint64_t begin,
                                uint64_t end) {
  if (begin > end) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": bad example range [", begin, ", ", end, ")"));
  }
  std::unique_ptr<Source> images;
  absl::StatusOr<IdxHeader> image_header = OpenIdx(images_path, kImagesMagic, &images);
  if (!image_header.ok()) return image_header.status();
  std::unique_ptr<Source> labels;
  absl::StatusOr<IdxHeader> label_header = OpenIdx(labels_path, kLabelsMagic, &labels);
  if (!label_header.ok()) return label_header.status();

  const uint64_t count = image_header->dims[0];
  const uint64_t rows = image_header->dims[1];
  const uint64_t cols = image_header->dims[2];
  if (rows == 0 || cols == 0) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": bad image size ", rows, "x", cols));
  }
  if (label_header->dims[0] != count) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": has ", count, " images but ", labels_path, " has ",
                                                   label_header->dims[0], " labels"));
  }
  const uint64_t pixels = rows * cols;  // each dimension < 2^32, so no overflow
  const uint64_t stop = std::min(end, count);
  const uint64_t start = std::min(begin, stop);

  std::vector<unsigned char> bytes;
  absl::Status status = ReadItems(*images, image_header->header_bytes, count, pixels, start, stop, "image", &bytes);
  if (!status.ok()) return status;
  std::vector<unsigned char> label_bytes;
  status = ReadItems(*labels, label_header->header_bytes, count, 1, start, stop, "label", &label_bytes);
  if (!status.ok()) return status;

  std::array<float, 256> scale;
  for (int i = 0; i < 256; ++i) scale[i] = static_cast<float>(i) / 255.0f;
  Dataset data;
  data.num_features = pixels;
  data.dense.resize(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) data.dense[i] = scale[bytes[i]];
  data.labels.assign(label_bytes.begin(), label_bytes.end());
  return data;
}

absl::StatusOr<uint64_t> IdxCount(const std::string& path) {
  std::unique_ptr<Source> source;
  absl::StatusOr<IdxHeader> header = OpenIdx(path, 0, &source);
  if (!header.ok()) return header.status();
  return header->dims[0];
}

}  // namespace tessera::data
