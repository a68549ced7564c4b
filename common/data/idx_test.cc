#include "common/data/idx.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/data/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::data {
namespace {

using test_util::IdxBytes;
using test_util::ScratchDir;
using test_util::WriteFile;
using test_util::WriteGzipFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint32_t kImages = 0x00000803;
constexpr uint32_t kLabels = 0x00000801;

// 5 images of 2x3 pixels: pixel j of image i is (i * 50 + j * 9) mod 256; labels 7, 0, 9, 3, 12.
std::string PixelBytes() {
  std::string pixels;
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 6; ++j) pixels.push_back(static_cast<char>((i * 50 + j * 9) % 256));
  }
  pixels[0] = 0;
  pixels[29] = static_cast<char>(255);
  return pixels;
}
const char kLabelBytes[] = {7, 0, 9, 3, 12};

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    images_ = dir_.Path("images");
    labels_ = dir_.Path("labels");
    WriteFile(images_, IdxBytes(kImages, {5, 2, 3}, PixelBytes()));
    WriteFile(labels_, IdxBytes(kLabels, {5}, std::string(kLabelBytes, 5)));
    gz_images_ = dir_.Path("images.gz");
    gz_labels_ = dir_.Path("labels.gz");
    WriteGzipFile(gz_images_, IdxBytes(kImages, {5, 2, 3}, PixelBytes()));
    WriteGzipFile(gz_labels_, IdxBytes(kLabels, {5}, std::string(kLabelBytes, 5)));
  }

  ScratchDir dir_;
  std::string images_, labels_, gz_images_, gz_labels_;
};

TEST_F(IdxTest, ReadsPlainAndGzip) {
  const std::string pixels = PixelBytes();
  for (bool gzip : {false, true}) {
    SCOPED_TRACE(gzip ? "gzip" : "plain");
    absl::StatusOr<Dataset> data = gzip ? ReadIdx(gz_images_, gz_labels_) : ReadIdx(images_, labels_);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_TRUE(data->is_dense());
    EXPECT_EQ(data->num_features, 6u);
    EXPECT_EQ(data->size(), 5u);
    EXPECT_THAT(data->labels, ElementsAre(7, 0, 9, 3, 12));
    ASSERT_EQ(data->dense.size(), 30u);
    for (size_t i = 0; i < 30; ++i) {
      EXPECT_FLOAT_EQ(data->dense[i], static_cast<unsigned char>(pixels[i]) / 255.0f) << i;
    }
    EXPECT_EQ(data->dense[0], 0.0f);
    EXPECT_EQ(data->dense[29], 1.0f);
    EXPECT_TRUE(data->offsets.empty());
  }
}

TEST_F(IdxTest, ExampleRanges) {
  for (bool gzip : {false, true}) {
    SCOPED_TRACE(gzip ? "gzip" : "plain");
    const std::string& im = gzip ? gz_images_ : images_;
    const std::string& lb = gzip ? gz_labels_ : labels_;
    absl::StatusOr<Dataset> whole = ReadIdx(im, lb);
    ASSERT_TRUE(whole.ok()) << whole.status();
    absl::StatusOr<Dataset> mid = ReadIdx(im, lb, 1, 3);
    ASSERT_TRUE(mid.ok()) << mid.status();
    EXPECT_THAT(mid->labels, ElementsAre(0, 9));
    EXPECT_EQ(mid->dense, std::vector<float>(whole->dense.begin() + 6, whole->dense.begin() + 18));
    absl::StatusOr<Dataset> tail = ReadIdx(im, lb, 3, 1000);  // end is clamped to the count
    ASSERT_TRUE(tail.ok()) << tail.status();
    EXPECT_THAT(tail->labels, ElementsAre(3, 12));
    for (uint64_t begin : {5u, 9u}) {
      absl::StatusOr<Dataset> empty = ReadIdx(im, lb, begin, begin + 2);
      ASSERT_TRUE(empty.ok()) << empty.status();
      EXPECT_EQ(empty->size(), 0u);
      EXPECT_EQ(empty->num_features, 6u);
    }
    absl::StatusOr<Dataset> bad = ReadIdx(im, lb, 3, 2);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(IdxTest, IdxCount) {
  for (const std::string& path : {images_, labels_, gz_images_, gz_labels_}) {
    absl::StatusOr<uint64_t> count = IdxCount(path);
    ASSERT_TRUE(count.ok()) << count.status();
    EXPECT_EQ(*count, 5u) << path;
  }
  std::string junk = dir_.Path("junk");
  WriteFile(junk, "hello world, not idx");
  absl::StatusOr<uint64_t> count = IdxCount(junk);
  ASSERT_FALSE(count.ok());
  EXPECT_THAT(std::string(count.status().message()), StartsWith(junk + ": bad IDX magic 0x68656c6c"));
  count = IdxCount(dir_.Path("missing"));
  EXPECT_EQ(count.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(IdxTest, BadMagic) {
  absl::StatusOr<Dataset> data = ReadIdx(labels_, labels_);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(data.status().message()),
            labels_ + ": bad IDX magic 0x00000801 (expected 0x00000803 for images)");
  data = ReadIdx(gz_images_, gz_images_);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(std::string(data.status().message()),
            gz_images_ + ": bad IDX magic 0x00000803 (expected 0x00000801 for labels)");
}

TEST_F(IdxTest, CountMismatch) {
  std::string labels = dir_.Path("labels4");
  WriteFile(labels, IdxBytes(kLabels, {4}, std::string(kLabelBytes, 4)));
  absl::StatusOr<Dataset> data = ReadIdx(images_, labels);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(data.status().message()),
            absl::StrCat(images_, ": has 5 images but ", labels, " has 4 labels"));
}

TEST_F(IdxTest, TruncatedAndOversizedFiles) {
  const std::string full = IdxBytes(kImages, {5, 2, 3}, PixelBytes());
  std::string cut = dir_.Path("cut");
  WriteFile(cut, full.substr(0, full.size() - 1));
  absl::StatusOr<Dataset> data = ReadIdx(cut, labels_);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(data.status().message()), cut + ": truncated: expected 30 bytes of image data, found 29");
  // Plain files are checked in full even when reading a range that the file still holds.
  data = ReadIdx(cut, labels_, 0, 1);
  EXPECT_FALSE(data.ok());

  // A gzip file whose (intact) stream holds too little data.
  std::string gz_cut = dir_.Path("cut.gz");
  WriteGzipFile(gz_cut, full.substr(0, full.size() - 7));
  data = ReadIdx(gz_cut, labels_);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(std::string(data.status().message()), gz_cut + ": truncated: expected 30 bytes of image data, found 23");

  // A truncated gzip stream.
  std::string bytes = test_util::GzipBytes(full);
  std::string gz_stream_cut = dir_.Path("stream_cut.gz");
  WriteFile(gz_stream_cut, bytes.substr(0, bytes.size() - 3));
  data = ReadIdx(gz_stream_cut, labels_);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(data.status().message()), StartsWith(gz_stream_cut + ": truncated gzip data"));

  // A truncated header.
  std::string header_cut = dir_.Path("header_cut");
  WriteFile(header_cut, full.substr(0, 10));
  data = ReadIdx(header_cut, labels_);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(std::string(data.status().message()),
            header_cut + ": truncated: expected a 16-byte IDX header, found 10 bytes");

  // Extra bytes after the labels.
  std::string long_labels = dir_.Path("long_labels");
  WriteFile(long_labels, IdxBytes(kLabels, {5}, std::string(kLabelBytes, 5)) + "xy");
  data = ReadIdx(images_, long_labels);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(std::string(data.status().message()),
              StartsWith(long_labels + ": 2 unexpected bytes after the label data"));
  std::string gz_long = dir_.Path("long_labels.gz");
  WriteGzipFile(gz_long, IdxBytes(kLabels, {5}, std::string(kLabelBytes, 5)) + "xy");
  data = ReadIdx(images_, gz_long);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(std::string(data.status().message()), StartsWith(gz_long + ": 2 unexpected bytes after the label data"));
}

TEST_F(IdxTest, HugeDeclaredCountDoesNotAllocate) {
  // The header claims 4 billion 65536x65536 images; the file holds a few bytes.
  std::string huge = dir_.Path("huge.gz");
  WriteGzipFile(huge, IdxBytes(kImages, {0xffffffffu, 0xffffu, 0xffffu}, "abc"));
  std::string labels = dir_.Path("huge_labels");
  WriteFile(labels, IdxBytes(kLabels, {0xffffffffu}, "abc"));
  absl::StatusOr<Dataset> data = ReadIdx(huge, labels);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(std::string(data.status().message()), StartsWith(huge + ": "));
  std::string big = dir_.Path("big.gz");
  WriteGzipFile(big, IdxBytes(kImages, {0x00ffffffu, 28, 28}, "abc"));
  std::string big_labels = dir_.Path("big_labels.gz");
  WriteGzipFile(big_labels, IdxBytes(kLabels, {0x00ffffffu}, "abc"));
  data = ReadIdx(big, big_labels);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(std::string(data.status().message()),
            big + ": truncated: expected 13153336560 bytes of image data, found 3");
}

TEST_F(IdxTest, MissingFilesAreNotFound) {
  std::string missing = dir_.Path("missing");
  absl::StatusOr<Dataset> data = ReadIdx(missing, labels_);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(data.status().message()), StartsWith(missing));
  data = ReadIdx(images_, missing);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(data.status().message()), StartsWith(missing));
}

constexpr char kFashionDir[] = "/usr/share/datasets/fashion-mnist/";

std::string Fashion(const std::string& name) { return absl::StrCat(kFashionDir, name); }

bool HaveFashionMnist() {
  return ::access(Fashion("train-images-idx3-ubyte.gz").c_str(), R_OK) == 0 &&
         ::access(Fashion("train-labels-idx1-ubyte.gz").c_str(), R_OK) == 0 &&
         ::access(Fashion("t10k-images-idx3-ubyte.gz").c_str(), R_OK) == 0 &&
         ::access(Fashion("t10k-labels-idx1-ubyte.gz").c_str(), R_OK) == 0;
}

TEST(FashionMnistTest, TrainAndTestSets) {
  if (!HaveFashionMnist()) GTEST_SKIP() << "Fashion-MNIST not installed in " << kFashionDir;
  struct Split {
    std::string prefix;
    uint64_t count;
  };
  for (const Split& split : {Split{"train", 60000}, Split{"t10k", 10000}}) {
    SCOPED_TRACE(split.prefix);
    const std::string images = Fashion(split.prefix + "-images-idx3-ubyte.gz");
    const std::string labels = Fashion(split.prefix + "-labels-idx1-ubyte.gz");
    absl::StatusOr<uint64_t> count = IdxCount(images);
    ASSERT_TRUE(count.ok()) << count.status();
    EXPECT_EQ(*count, split.count);
    count = IdxCount(labels);
    ASSERT_TRUE(count.ok()) << count.status();
    EXPECT_EQ(*count, split.count);

    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<Dataset> data = ReadIdx(images, labels);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(data.ok()) << data.status();
    std::printf("read %s (%llu examples) in %.3f s\n", images.c_str(), static_cast<unsigned long long>(data->size()),
                seconds);
    EXPECT_EQ(data->size(), split.count);
    EXPECT_EQ(data->num_features, 784u);
    ASSERT_EQ(data->dense.size(), split.count * 784);
    auto [lo, hi] = std::minmax_element(data->dense.begin(), data->dense.end());
    EXPECT_EQ(*lo, 0.0f);
    EXPECT_EQ(*hi, 1.0f);
    std::vector<uint64_t> histogram(10, 0);
    for (float label : data->labels) {
      ASSERT_GE(label, 0.0f);
      ASSERT_LE(label, 9.0f);
      ASSERT_EQ(label, static_cast<float>(static_cast<int>(label)));
      ++histogram[static_cast<int>(label)];
    }
    EXPECT_EQ(histogram, std::vector<uint64_t>(10, split.count / 10));

    // The last ten examples, read as a range, match the whole read.
    absl::StatusOr<Dataset> tail = ReadIdx(images, labels, split.count - 10, UINT64_MAX);
    ASSERT_TRUE(tail.ok()) << tail.status();
    EXPECT_EQ(tail->size(), 10u);
    EXPECT_EQ(tail->dense, std::vector<float>(data->dense.end() - 7840, data->dense.end()));
    EXPECT_EQ(tail->labels, std::vector<float>(data->labels.end() - 10, data->labels.end()));
  }
}

}  // namespace
}  // namespace tessera::data
