// Deterministic fuzzing of the readers: thousands of corrupted variants of valid libsvm and IDX
// files (plain and gzip). Every read must either succeed with a consistent Dataset or fail with a
// message that starts with the offending file's path; never crash, hang or throw.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/data/idx.h"
#include "common/data/libsvm.h"
#include "common/data/test_util.h"
#include "gtest/gtest.h"

namespace tessera::data {
namespace {

using test_util::GzipBytes;
using test_util::IdxBytes;
using test_util::ScratchDir;
using test_util::WriteFile;

const char* const kGarbageTokens[] = {
    ":",
    "::",
    "1:",
    ":1",
    "nan",
    "1:inf",
    "-0:1",
    "0:1",
    "1:1:1",
    "+-1",
    "0x10:1",
    " ",
    "\t",
    "\n",
    "\r\n",
    "#",
    "\r",
    "1e999",
    "3:1e999",
    "3:-1e-999",
    "\xff\xfe",
    "\0",
    "2",
    "-1",
    "+1",
    "99999999999999999999999:1",
    "4:4 4:4",
    "7:1 3:1",
    "18446744073709551615:1",
    "18446744073709551616:1",
    "1:.",
    "1:-",
    "1:e5",
    "1:1e",
    "label",
    "qid:3",
    "2.5",
    "1 1:1\n",
};

const char kInteresting[] = " \t\r\n:#+-.e0123456789naif\xff";

class FuzzTest : public ::testing::Test {
 protected:
  static std::string BaseLibsvm() {
    std::string text = "# a libsvm file for fuzzing\n";
    std::mt19937 rng(3);
    for (int i = 0; i < 24; ++i) {
      absl::StrAppend(&text, i % 3 == 0 ? "-1" : (i % 3 == 1 ? "+1" : "0"));
      uint64_t id = 0;
      for (int j = 0; j < 1 + i % 5; ++j) {
        id += 1 + rng() % 9;
        absl::StrAppend(&text, " ", id, ":", static_cast<int>(rng() % 200) - 100, ".5e-1");
      }
      text += i % 4 == 0 ? "  # trailing\r\n" : "\n";
      if (i % 7 == 0) text += "\n";
    }
    return text;
  }

  char RandomByte() {
    if (rng_() % 2 == 0) return kInteresting[rng_() % (sizeof(kInteresting) - 1)];
    return static_cast<char>(rng_() % 256);
  }

  std::string RandomBytes(size_t n) {
    std::string out;
    for (size_t i = 0; i < n; ++i) out.push_back(static_cast<char>(rng_() % 256));
    return out;
  }

  std::string FlipBytes(std::string s, int max_flips) {
    if (s.empty()) return s;
    int flips = 1 + static_cast<int>(rng_() % max_flips);
    for (int i = 0; i < flips; ++i) s[rng_() % s.size()] = RandomByte();
    return s;
  }

  std::string InsertGarbage(std::string s) {
    int n = 1 + static_cast<int>(rng_() % 3);
    for (int i = 0; i < n; ++i) {
      std::string token;
      size_t pick = rng_() % (std::size(kGarbageTokens) + 1);
      if (pick == std::size(kGarbageTokens)) {
        token = RandomBytes(1 + rng_() % 8);
      } else if (kGarbageTokens[pick][0] == '\0') {
        token = std::string(1, '\0');
      } else {
        token = kGarbageTokens[pick];
      }
      if (rng_() % 2 == 0) token = " " + token;
      s.insert(rng_() % (s.size() + 1), token);
    }
    return s;
  }

  // Reads `contents` as a libsvm file (whole, and one random range) with varying options.
  void CheckLibsvm(const std::string& contents) {
    const std::string path = dir_.Path(absl::StrCat("fuzz", variant_++, ".txt"));
    WriteFile(path, contents);
    static const LibsvmOptions kOptions[] = {{0, 2}, {40, 2}, {0, 5}};
    const LibsvmOptions& opts = kOptions[variant_ % 3];
    CheckLibsvmRead(path, opts, 0, UINT64_MAX);
    uint64_t a = rng_() % (contents.size() + 2);
    uint64_t b = rng_() % (contents.size() + 2);
    CheckLibsvmRead(path, opts, std::min(a, b), std::max(a, b));
    std::remove(path.c_str());
  }

  void CheckLibsvmRead(const std::string& path, const LibsvmOptions& opts, uint64_t begin, uint64_t end) {
    absl::StatusOr<Dataset> data = ReadLibsvm(path, opts, begin, end);
    if (!data.ok()) {
      ++failures_;
      ASSERT_TRUE(absl::StartsWith(data.status().message(), path + ":")) << data.status();
      ASSERT_TRUE(data.status().code() == absl::StatusCode::kInvalidArgument ||
                  data.status().code() == absl::StatusCode::kDataLoss)
          << data.status();
      return;
    }
    ++successes_;
    ASSERT_EQ(data->offsets.size(), data->labels.size() + 1);
    ASSERT_EQ(data->offsets.front(), 0u);
    ASSERT_EQ(data->offsets.back(), data->ids.size());
    ASSERT_EQ(data->ids.size(), data->values.size());
    ASSERT_TRUE(data->dense.empty());
    for (size_t i = 0; i < data->size(); ++i) {
      ASSERT_LE(data->offsets[i], data->offsets[i + 1]);
      for (uint64_t k = data->offsets[i]; k < data->offsets[i + 1]; ++k) {
        ASSERT_GE(data->ids[k], 1u);
        ASSERT_LT(data->ids[k], data->num_features + (opts.num_features != 0 ? 1 : 0));
        if (k > data->offsets[i]) {
          ASSERT_LT(data->ids[k - 1], data->ids[k]);
        }
        ASSERT_TRUE(std::isfinite(data->values[k]));
      }
      float label = data->labels[i];
      ASSERT_TRUE(label >= 0 && label < opts.num_classes && label == std::floor(label)) << label;
    }
  }

  // Writes the images and labels files and reads them (whole, one random range, and counts).
  void CheckIdx(const std::string& images, const std::string& labels) {
    const std::string images_path = dir_.Path(absl::StrCat("images", variant_));
    const std::string labels_path = dir_.Path(absl::StrCat("labels", variant_++));
    WriteFile(images_path, images);
    WriteFile(labels_path, labels);
    CheckIdxRead(images_path, labels_path, 0, UINT64_MAX);
    uint64_t a = rng_() % 12;
    uint64_t b = rng_() % 12;
    CheckIdxRead(images_path, labels_path, std::min(a, b), std::max(a, b));
    for (const std::string& path : {images_path, labels_path}) {
      absl::StatusOr<uint64_t> count = IdxCount(path);
      if (!count.ok()) {
        ASSERT_TRUE(absl::StartsWith(count.status().message(), path + ":")) << count.status();
      }
    }
    std::remove(images_path.c_str());
    std::remove(labels_path.c_str());
  }

  void CheckIdxRead(const std::string& images, const std::string& labels, uint64_t begin, uint64_t end) {
    absl::StatusOr<Dataset> data = ReadIdx(images, labels, begin, end);
    if (!data.ok()) {
      ++failures_;
      ASSERT_TRUE(absl::StartsWith(data.status().message(), images + ":") ||
                  absl::StartsWith(data.status().message(), labels + ":"))
          << data.status();
      return;
    }
    ++successes_;
    ASSERT_GT(data->num_features, 0u);
    ASSERT_EQ(data->dense.size(), data->size() * data->num_features);
    for (float v : data->dense) ASSERT_TRUE(v >= 0.0f && v <= 1.0f) << v;
    for (float label : data->labels) ASSERT_TRUE(label >= 0 && label <= 255) << label;
  }

  ScratchDir dir_;
  std::mt19937 rng_{12345};
  int variant_ = 0;
  int successes_ = 0;
  int failures_ = 0;
};

TEST_F(FuzzTest, CorruptedLibsvmText) {
  const std::string base = BaseLibsvm();
  for (size_t len = 0; len <= base.size(); ++len) {
    ASSERT_NO_FATAL_FAILURE(CheckLibsvm(base.substr(0, len)));
  }
  for (int i = 0; i < 1500; ++i) ASSERT_NO_FATAL_FAILURE(CheckLibsvm(FlipBytes(base, 4)));
  for (int i = 0; i < 1000; ++i) ASSERT_NO_FATAL_FAILURE(CheckLibsvm(InsertGarbage(base)));
  for (int i = 0; i < 200; ++i) {
    ASSERT_NO_FATAL_FAILURE(CheckLibsvm(base + RandomBytes(1 + rng_() % 64)));
  }
  for (int i = 0; i < 100; ++i) ASSERT_NO_FATAL_FAILURE(CheckLibsvm(RandomBytes(rng_() % 512)));
  // Both outcomes must have happened for the fuzzing to mean anything.
  EXPECT_GT(successes_, 500);
  EXPECT_GT(failures_, 500);
}

TEST_F(FuzzTest, CorruptedLibsvmGzip) {
  const std::string base = BaseLibsvm();
  const std::string gz = GzipBytes(base);
  for (size_t len = 0; len <= gz.size(); ++len) {
    ASSERT_NO_FATAL_FAILURE(CheckLibsvm(gz.substr(0, len)));
  }
  for (int i = 0; i < 1500; ++i) ASSERT_NO_FATAL_FAILURE(CheckLibsvm(FlipBytes(gz, 3)));
  for (int i = 0; i < 200; ++i) {
    ASSERT_NO_FATAL_FAILURE(CheckLibsvm(gz + RandomBytes(1 + rng_() % 32)));
  }
  for (int i = 0; i < 300; ++i) {
    // Valid compression of corrupted text, and the gzip magic followed by random bytes.
    ASSERT_NO_FATAL_FAILURE(CheckLibsvm(GzipBytes(InsertGarbage(base))));
    ASSERT_NO_FATAL_FAILURE(CheckLibsvm("\x1f\x8b" + RandomBytes(rng_() % 64)));
  }
  EXPECT_GT(successes_, 200);
  EXPECT_GT(failures_, 1000);
}

TEST_F(FuzzTest, CorruptedIdx) {
  std::string pixels;
  for (int i = 0; i < 8 * 16; ++i) pixels.push_back(static_cast<char>(i * 37 % 256));
  std::string label_bytes;
  for (int i = 0; i < 8; ++i) label_bytes.push_back(static_cast<char>(i));
  const std::string images = IdxBytes(0x803, {8, 4, 4}, pixels);
  const std::string labels = IdxBytes(0x801, {8}, label_bytes);
  const std::string gz_images = GzipBytes(images);
  const std::string gz_labels = GzipBytes(labels);

  struct Pair {
    const std::string& mutated;
    const std::string& other;
    bool mutate_images;
  };
  for (const Pair& pair : {Pair{images, labels, true}, Pair{labels, images, false}, Pair{gz_images, gz_labels, true},
                           Pair{gz_labels, images, false}}) {
    auto check = [&](const std::string& bad) {
      if (pair.mutate_images) {
        CheckIdx(bad, pair.other);
      } else {
        CheckIdx(pair.other, bad);
      }
    };
    for (size_t len = 0; len <= pair.mutated.size(); ++len) {
      ASSERT_NO_FATAL_FAILURE(check(pair.mutated.substr(0, len)));
    }
    for (int i = 0; i < 600; ++i) ASSERT_NO_FATAL_FAILURE(check(FlipBytes(pair.mutated, 3)));
    for (int i = 0; i < 100; ++i) {
      ASSERT_NO_FATAL_FAILURE(check(pair.mutated + RandomBytes(1 + rng_() % 16)));
    }
  }
  EXPECT_GT(successes_, 300);
  EXPECT_GT(failures_, 1000);
}

}  // namespace
}  // namespace tessera::data
