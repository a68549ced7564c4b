#include "common/data/chunks.h"

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/data/idx.h"
#include "common/data/libsvm.h"
#include "common/data/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::data {
namespace {

using test_util::Concat;
using test_util::IdxBytes;
using test_util::ScratchDir;
using test_util::WriteFile;
using test_util::WriteGzipFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string LibsvmText(int lines, int seed) {
  std::string text;
  for (int i = 0; i < lines; ++i) {
    absl::StrAppend(&text, (i + seed) % 2, " ", 1 + (i * 7 + seed) % 50, ":", i, " ", 60 + i % 9, ":0.5\n");
  }
  return text;
}

TEST(SplitLibsvmTest, RangesTileEachFileAndReadEveryLineOnce) {
  ScratchDir dir;
  const std::string a = dir.Path("a.txt");
  const std::string b = dir.Path("b.gz");
  const std::string c = dir.Path("c.txt");
  const std::string empty = dir.Path("empty.txt");
  const std::string text_a = LibsvmText(300, 1);
  const std::string text_c = LibsvmText(77, 2);
  WriteFile(a, text_a);
  WriteGzipFile(b, LibsvmText(50, 3));
  WriteFile(c, text_c);
  WriteFile(empty, "");

  for (uint64_t target : {1ull, 7ull, 100ull, 1000ull, 4096ull, 1ull << 30}) {
    SCOPED_TRACE(absl::StrCat("target ", target));
    absl::StatusOr<std::vector<Chunk>> chunks = SplitLibsvm({a, b, empty, c}, target);
    ASSERT_TRUE(chunks.ok()) << chunks.status();
    // Per plain file: ceil(size / target) contiguous ranges from 0 to the size, none larger than
    // the target.
    const uint64_t expected_a = (text_a.size() + target - 1) / target;
    const uint64_t expected_c = (text_c.size() + target - 1) / target;
    ASSERT_EQ(chunks->size(), expected_a + 1 + expected_c);
    std::string last_path;
    uint64_t next_begin = 0;
    Dataset joined_a, joined_c;
    joined_a.offsets.push_back(0);
    joined_c.offsets.push_back(0);
    for (const Chunk& chunk : *chunks) {
      EXPECT_TRUE(chunk.labels_path.empty());
      if (chunk.path == b) {
        EXPECT_EQ(chunk.begin, 0u);
        EXPECT_EQ(chunk.end, UINT64_MAX);
        continue;
      }
      if (chunk.path != last_path) next_begin = 0;
      last_path = chunk.path;
      EXPECT_EQ(chunk.begin, next_begin);
      EXPECT_LE(chunk.end - chunk.begin, target);
      EXPECT_GT(chunk.end, chunk.begin);
      next_begin = chunk.end;
      absl::StatusOr<Dataset> part = ReadLibsvm(chunk.path, LibsvmOptions{}, chunk.begin, chunk.end);
      ASSERT_TRUE(part.ok()) << part.status();
      Dataset& joined = chunk.path == a ? joined_a : joined_c;
      joined = Concat(joined, *part);
    }
    EXPECT_EQ(chunks->front().path, a);
    EXPECT_EQ(chunks->back().path, c);
    EXPECT_EQ(chunks->back().end, text_c.size());
    EXPECT_EQ((*chunks)[expected_a - 1].path, a);
    EXPECT_EQ((*chunks)[expected_a - 1].end, text_a.size());
    for (const auto& [path, joined] : {std::make_pair(a, joined_a), std::make_pair(c, joined_c)}) {
      absl::StatusOr<Dataset> whole = ReadLibsvm(path, LibsvmOptions{});
      ASSERT_TRUE(whole.ok()) << whole.status();
      EXPECT_EQ(joined.labels, whole->labels);
      EXPECT_EQ(joined.offsets, whole->offsets);
      EXPECT_EQ(joined.ids, whole->ids);
      EXPECT_EQ(joined.values, whole->values);
    }
  }
}

TEST(SplitLibsvmTest, Errors) {
  ScratchDir dir;
  const std::string a = dir.Path("a.txt");
  WriteFile(a, "1 1:1\n");
  absl::StatusOr<std::vector<Chunk>> chunks = SplitLibsvm({a}, 0);
  EXPECT_EQ(chunks.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string missing = dir.Path("missing.txt");
  chunks = SplitLibsvm({a, missing}, 100);
  EXPECT_EQ(chunks.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(chunks.status().message()), StartsWith(missing));
  chunks = SplitLibsvm({}, 100);
  ASSERT_TRUE(chunks.ok());
  EXPECT_TRUE(chunks->empty());
}

TEST(SplitIdxTest, ExampleRanges) {
  ScratchDir dir;
  const std::string images = dir.Path("images");
  const std::string labels = dir.Path("labels.gz");
  WriteFile(images, IdxBytes(0x803, {10, 1, 2}, std::string(20, '\x10')));
  WriteGzipFile(labels, IdxBytes(0x801, {10}, std::string(10, '\x01')));
  absl::StatusOr<std::vector<Chunk>> chunks = SplitIdx(images, labels, 3);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  EXPECT_THAT(*chunks, ElementsAre(Chunk{images, labels, 0, 3}, Chunk{images, labels, 3, 6},
                                   Chunk{images, labels, 6, 9}, Chunk{images, labels, 9, 10}));
  chunks = SplitIdx(images, labels, 10);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  EXPECT_THAT(*chunks, ElementsAre(Chunk{images, labels, 0, 10}));
  chunks = SplitIdx(images, labels, UINT64_MAX);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  EXPECT_THAT(*chunks, ElementsAre(Chunk{images, labels, 0, 10}));

  uint64_t total = 0;
  chunks = SplitIdx(images, labels, 4);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  for (const Chunk& chunk : *chunks) {
    absl::StatusOr<Dataset> part = ReadIdx(chunk.path, chunk.labels_path, chunk.begin, chunk.end);
    ASSERT_TRUE(part.ok()) << part.status();
    total += part->size();
  }
  EXPECT_EQ(total, 10u);

  EXPECT_EQ(SplitIdx(images, labels, 0).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string short_labels = dir.Path("short_labels");
  WriteFile(short_labels, IdxBytes(0x801, {9}, std::string(9, '\x01')));
  chunks = SplitIdx(images, short_labels, 3);
  ASSERT_FALSE(chunks.ok());
  EXPECT_EQ(std::string(chunks.status().message()),
            absl::StrCat(images, ": has 10 images but ", short_labels, " has 9 labels"));
  chunks = SplitIdx(dir.Path("nope"), labels, 3);
  EXPECT_EQ(chunks.status().code(), absl::StatusCode::kNotFound);
}

TEST(SplitIdxTest, FashionMnist) {
  const std::string images = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
  const std::string labels = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz";
  struct stat st;
  if (::stat(images.c_str(), &st) != 0 || ::stat(labels.c_str(), &st) != 0) {
    GTEST_SKIP() << "Fashion-MNIST not installed";
  }
  absl::StatusOr<std::vector<Chunk>> chunks = SplitIdx(images, labels, 7000);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  ASSERT_EQ(chunks->size(), 9u);
  EXPECT_EQ(chunks->back(), (Chunk{images, labels, 56000, 60000}));
}

TEST(ExpandGlobTest, MatchesSortedAndReportsMissing) {
  ScratchDir dir;
  for (const char* name : {"part-2.txt", "part-10.txt", "part-1.txt", "other.dat"}) {
    WriteFile(dir.Path(name), "1 1:1\n");
  }
  absl::StatusOr<std::vector<std::string>> paths = ExpandGlob(dir.Path("part-*.txt"));
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_THAT(*paths, ElementsAre(dir.Path("part-1.txt"), dir.Path("part-10.txt"), dir.Path("part-2.txt")));

  paths = ExpandGlob(dir.Path("other.dat"));
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_THAT(*paths, ElementsAre(dir.Path("other.dat")));

  const std::string missing = dir.Path("missing.txt");
  paths = ExpandGlob(missing);
  ASSERT_FALSE(paths.ok());
  EXPECT_EQ(paths.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(paths.status().message()), StartsWith(missing));

  const std::string pattern = dir.Path("*.csv");
  paths = ExpandGlob(pattern);
  ASSERT_FALSE(paths.ok());
  EXPECT_EQ(paths.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(paths.status().message()), StartsWith(pattern));
  EXPECT_THAT(std::string(paths.status().message()), HasSubstr("no files match"));
}

}  // namespace
}  // namespace tessera::data
