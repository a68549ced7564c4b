#include "common/data/libsvm.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/data/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::data {
namespace {

using test_util::Concat;
using test_util::ScratchDir;
using test_util::WriteFile;
using test_util::WriteGzipFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

void ExpectSameData(const Dataset& a, const Dataset& b) {
  EXPECT_EQ(a.num_features, b.num_features);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.offsets, b.offsets);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.values, b.values);
  EXPECT_EQ(a.dense, b.dense);
}

class LibsvmTest : public ::testing::Test {
 protected:
  // Writes `text` to a file named `name` in the scratch directory and returns its path.
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_.Path(name);
    WriteFile(path, text);
    return path;
  }

  ScratchDir dir_;
};

TEST_F(LibsvmTest, ParsesValidFile) {
  std::string path = Write("train.txt",
                           "+1 1:0.5 3:-2.25 10:1e-3\n"
                           "-1 2:4\n"
                           "0 5:.5 6:+7 7:1E2\n"
                           "1\n"
                           "1.0 4:0\n");
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_FALSE(data->is_dense());
  EXPECT_EQ(data->size(), 5u);
  EXPECT_THAT(data->labels, ElementsAre(1, 0, 0, 1, 1));
  EXPECT_THAT(data->offsets, ElementsAre(0, 3, 4, 7, 7, 8));
  EXPECT_THAT(data->ids, ElementsAre(1, 3, 10, 2, 5, 6, 7, 4));
  EXPECT_THAT(data->values, ElementsAre(0.5f, -2.25f, 1e-3f, 4.0f, 0.5f, 7.0f, 100.0f, 0.0f));
  EXPECT_EQ(data->num_features, 11u);  // largest index + 1
}

TEST_F(LibsvmTest, DeclaredNumFeaturesIsKept) {
  std::string path = Write("a.txt", "1 1:1 784:2\n");
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{784, 2});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->num_features, 784u);
}

TEST_F(LibsvmTest, EmptyFileGivesNoExamples) {
  std::string path = Write("empty.txt", "");
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 0u);
  EXPECT_THAT(data->offsets, ElementsAre(0));
  EXPECT_EQ(data->num_features, 0u);
}

TEST_F(LibsvmTest, MulticlassLabels) {
  std::string path = Write("multi.txt", "0 1:1\n2 1:1\n1.0 2:1\n9 3:1\n");
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{0, 10});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->labels, ElementsAre(0, 2, 1, 9));

  absl::StatusOr<Dataset> bad = ReadLibsvm(path, LibsvmOptions{0, 3});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(bad.status().message()),
            absl::StrCat(path, ":4: label '9' is not an integer in 0..2 (num_classes = 3)"));
}

TEST_F(LibsvmTest, CommentsBlankLinesCrlfAndTabs) {
  std::string path = Write("messy.txt",
                           "# header comment\r\n"
                           "\r\n"
                           "1 1:1 2:2 # trailing comment\r\n"
                           "   \t  \n"
                           "\t-1\t3:3   4:4\t\r\n"
                           "#1 9:9\n"
                           "0 5:5");  // no final newline
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->labels, ElementsAre(1, 0, 0));
  EXPECT_THAT(data->ids, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(data->values, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_THAT(data->offsets, ElementsAre(0, 2, 4, 5));
}

TEST_F(LibsvmTest, OutOfOrderIndicesAreSorted) {
  std::string path = Write("unsorted.txt", "1 7:7 2:2 5:5\n0 3:3 1:1\n");
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->ids, ElementsAre(2, 5, 7, 1, 3));
  EXPECT_THAT(data->values, ElementsAre(2, 5, 7, 1, 3));
}

TEST_F(LibsvmTest, TinyValuesUnderflowToZeroNotError) {
  std::string path = Write("tiny.txt", "1 1:1e-50 2:-1e-400 3:1e-40\n");
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_TRUE(data.ok()) << data.status();
  ASSERT_EQ(data->values.size(), 3u);
  EXPECT_EQ(data->values[0], 0.0f);
  EXPECT_EQ(data->values[1], 0.0f);
  EXPECT_GT(data->values[2], 0.0f);  // a float subnormal
  EXPECT_LT(data->values[2], 1e-37f);
}

TEST_F(LibsvmTest, LineLongerThanReadBuffer) {
  std::string line = "1";
  for (int i = 1; i <= 300000; ++i) absl::StrAppend(&line, " ", i, ":", i % 7);
  std::string path = Write("long.txt", absl::StrCat("0 1:1\n", line, "\n0 2:2\n"));
  ASSERT_GT(line.size(), 2u << 20);
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 3u);
  EXPECT_THAT(data->offsets, ElementsAre(0, 1, 300001, 300002));
  EXPECT_EQ(data->ids[300000], 300000u);
  EXPECT_EQ(data->values[300000], 300000 % 7);
}

TEST_F(LibsvmTest, GzipMatchesPlain) {
  std::string text = "1 1:0.5 3:2\n-1 2:1\n# c\n0 4:4 5:5\n";
  std::string plain = Write("data.txt", text);
  std::string gz = dir_.Path("data.bin");  // no .gz suffix: detection is by magic bytes
  WriteGzipFile(gz, text);
  absl::StatusOr<Dataset> a = ReadLibsvm(plain, LibsvmOptions{});
  absl::StatusOr<Dataset> b = ReadLibsvm(gz, LibsvmOptions{});
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectSameData(*a, *b);
  EXPECT_EQ(b->size(), 3u);
}

TEST_F(LibsvmTest, ConcatenatedGzipMembersAreOneStream) {
  std::string gz = dir_.Path("multi.gz");
  WriteFile(gz, test_util::GzipBytes("1 1:1\n0 2:2\n") + test_util::GzipBytes("1 3:3\n"));
  absl::StatusOr<Dataset> data = ReadLibsvm(gz, LibsvmOptions{});
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_THAT(data->ids, ElementsAre(1, 2, 3));
}

TEST_F(LibsvmTest, TruncatedGzipIsDataLoss) {
  std::string text;
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&text, i % 2, " ", i + 1, ":", i, "\n");
  std::string bytes = test_util::GzipBytes(text);
  for (size_t cut : {size_t{2}, size_t{10}, bytes.size() / 2, bytes.size() - 4, bytes.size() - 1}) {
    std::string path = dir_.Path(absl::StrCat("cut", cut, ".gz"));
    WriteFile(path, bytes.substr(0, cut));
    absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
    ASSERT_FALSE(data.ok()) << "cut at " << cut;
    EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss) << data.status();
    EXPECT_THAT(std::string(data.status().message()), StartsWith(path + ": "));
    EXPECT_THAT(std::string(data.status().message()), HasSubstr("gzip"));
  }
}

TEST_F(LibsvmTest, CorruptGzipIsDataLoss) {
  std::string text;
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&text, i % 2, " ", i + 1, ":", i, "\n");
  std::string bytes = test_util::GzipBytes(text);
  // Corrupt the CRC in the trailer: the data decompresses but fails the check.
  bytes[bytes.size() - 6] ^= 0x55;
  std::string path = Write("crc.gz", bytes);
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(data.status().message()), StartsWith(path + ": corrupt gzip data"));
}

TEST_F(LibsvmTest, MissingFileIsNotFound) {
  std::string path = dir_.Path("nope.txt");
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(data.status().message()), StartsWith(path));
}

TEST_F(LibsvmTest, DirectoryIsInvalidArgument) {
  absl::StatusOr<Dataset> data = ReadLibsvm(dir_.dir(), LibsvmOptions{});
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(data.status().message()), StartsWith(dir_.dir()));
}

TEST_F(LibsvmTest, BadOptionsAndRanges) {
  std::string path = Write("a.txt", "1 1:1\n");
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{0, 1});
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  data = ReadLibsvm(path, LibsvmOptions{}, 5, 4);
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  data = ReadLibsvm(path, LibsvmOptions{}, 3, 3);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->size(), 0u);
  data = ReadLibsvm(path, LibsvmOptions{}, 1000, 2000);  // past the end
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->size(), 0u);
}

struct BadCase {
  std::string text;
  LibsvmOptions opts;
  int line;
  std::string what;  // the message after "<path>:<line>: "
};

TEST_F(LibsvmTest, MalformedInputErrors) {
  const std::string ok = "1 1:1\n";
  const std::vector<BadCase> cases = {
      {ok + "1 abc\n", {}, 2, "expected 'index:value' but found 'abc'"},
      {ok + ok + "0 1:1 abc:1\n", {}, 3, "expected 'index:value' but found 'abc:1' (bad feature index)"},
      {"1 0:1\n", {}, 1, "feature index 0 is invalid (indices start at 1)"},
      {ok + "1 900:1\n", {784, 2}, 2, "feature index 900 is out of range (num_features = 784)"},
      {"1 99999999999999999999999:1\n",
       {},
       1,
       "feature index 99999999999999999999999 is out of range (num_features = unbounded)"},
      {"1:0.5 2:1\n", {}, 1, "missing label: the line starts with '1:0.5'"},
      {"2 1:1\n", {}, 1, "label '2' is not 0/1 or -1/+1"},
      {"x 1:1\n", {}, 1, "bad number 'x' for the label"},
      {"+-1 1:1\n", {}, 1, "bad number '+-1' for the label"},
      {"1.5 1:1\n", {0, 4}, 1, "label '1.5' is not an integer in 0..3 (num_classes = 4)"},
      {"-1 1:1\n", {0, 4}, 1, "label '-1' is not an integer in 0..3 (num_classes = 4)"},
      {"1 3:x1.5\n", {}, 1, "bad number 'x1.5' for feature 3"},
      {"1 3:\n", {}, 1, "bad number '' for feature 3"},
      {"1 3:1.5.5\n", {}, 1, "bad number '1.5.5' for feature 3"},
      {"1 3:0x10\n", {}, 1, "bad number '0x10' for feature 3"},
      {"1 3:nan\n", {}, 1, "value 'nan' is not finite (feature 3)"},
      {"1 3:-inf\n", {}, 1, "value '-inf' is not finite (feature 3)"},
      {"1 3:1e39\n", {}, 1, "value '1e39' is out of range for a float (feature 3)"},
      {"1 2:1 2:1\n", {}, 1, "duplicate feature index 2"},
      {"1 5:1 2:1 5:3\n", {}, 1, "duplicate feature index 5"},
      {"1 1:1:1\n", {}, 1, "bad number '1:1' for feature 1"},
      {"1 -2:1\n", {}, 1, "expected 'index:value' but found '-2:1' (bad feature index)"},
      {"1 :1\n", {}, 1, "expected 'index:value' but found ':1' (bad feature index)"},
      {"1 1:1\x01\n", {}, 1, "bad number '1\\x01' for feature 1"},
      // Comments and blank lines count as lines; CRLF does not add lines.
      {"# c\n\n1 1:1\r\n\r\n1 2:y\r\n", {}, 5, "bad number 'y' for feature 2"},
      {"1 1:1\r\r\n0 2:1 1:1 # fine\n1 q\n", {}, 3, "expected 'index:value' but found 'q'"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("case ", i, ": ", cases[i].text));
    std::string path = Write(absl::StrCat("bad", i, ".txt"), cases[i].text);
    absl::StatusOr<Dataset> data = ReadLibsvm(path, cases[i].opts);
    ASSERT_FALSE(data.ok());
    EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(data.status().message()), absl::StrCat(path, ":", cases[i].line, ": ", cases[i].what));
  }
}

TEST_F(LibsvmTest, LongBadTokenIsShortenedInMessage) {
  std::string path = Write("longtok.txt", absl::StrCat("1 ", std::string(10000, 'z'), "\n"));
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(std::string(data.status().message()), HasSubstr("...'"));
  EXPECT_LT(data.status().message().size(), 200u);
}

TEST_F(LibsvmTest, ErrorLineNumberIsTrueLineWhenReadingARange) {
  std::string text;
  for (int i = 1; i <= 16; ++i) absl::StrAppend(&text, i % 2, " ", i, ":1\n");
  // Lines 1..9 take 6 bytes each, lines 10..16 seven: line 10 covers [54, 61), line 11 [61, 68).
  const uint64_t middle = 56;
  text += "1 3:abc\n";  // line 17
  std::string path = Write("train.txt", text);
  absl::StatusOr<Dataset> data = ReadLibsvm(path, LibsvmOptions{}, middle);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(std::string(data.status().message()), absl::StrCat(path, ":17: bad number 'abc' for feature 3"));

  std::string gz = dir_.Path("train.gz");
  WriteGzipFile(gz, text);
  data = ReadLibsvm(gz, LibsvmOptions{}, middle);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(std::string(data.status().message()), absl::StrCat(gz, ":17: bad number 'abc' for feature 3"));

  // A range that ends before the bad line reads fine.
  data = ReadLibsvm(path, LibsvmOptions{}, middle, 62);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 1u);
  EXPECT_THAT(data->ids, ElementsAre(11));
}

// A file whose lines vary in length, with comments, blank lines, CRLF and a last line without '\n'.
std::string RangeTestText() {
  std::mt19937 rng(7);
  std::string text;
  for (int line = 0; line < 60; ++line) {
    switch (rng() % 8) {
      case 0:
        text += "\n";
        continue;
      case 1:
        text += "# comment 1:2\n";
        continue;
      default:
        break;
    }
    absl::StrAppend(&text, rng() % 2 == 0 ? "-1" : "+1");
    uint64_t id = 0;
    int n = static_cast<int>(rng() % 6);
    for (int i = 0; i < n; ++i) {
      id += 1 + rng() % 20;
      absl::StrAppend(&text, " ", id, ":", static_cast<int>(rng() % 100) - 50, ".25");
    }
    text += rng() % 5 == 0 ? "\r\n" : "\n";
  }
  text += "1 3:3";
  return text;
}

TEST_F(LibsvmTest, TwoRangesSplitAtEveryOffsetReadEachLineOnce) {
  const std::string text = RangeTestText();
  std::string plain = Write("ranges.txt", text);
  std::string gz = dir_.Path("ranges.gz");
  WriteGzipFile(gz, text);
  for (const std::string& path : {plain, gz}) {
    SCOPED_TRACE(path);
    absl::StatusOr<Dataset> whole = ReadLibsvm(path, LibsvmOptions{});
    ASSERT_TRUE(whole.ok()) << whole.status();
    ASSERT_GT(whole->size(), 30u);
    for (uint64_t cut = 0; cut <= text.size() + 1; ++cut) {
      absl::StatusOr<Dataset> head = ReadLibsvm(path, LibsvmOptions{}, 0, cut);
      absl::StatusOr<Dataset> tail = ReadLibsvm(path, LibsvmOptions{}, cut);
      ASSERT_TRUE(head.ok()) << head.status();
      ASSERT_TRUE(tail.ok()) << tail.status();
      Dataset joined = Concat(*head, *tail);
      joined.num_features = whole->num_features;
      ASSERT_EQ(joined.labels, whole->labels) << "cut at " << cut;
      ASSERT_EQ(joined.offsets, whole->offsets) << "cut at " << cut;
      ASSERT_EQ(joined.ids, whole->ids) << "cut at " << cut;
      ASSERT_EQ(joined.values, whole->values) << "cut at " << cut;
    }
  }
}

TEST_F(LibsvmTest, ManyRandomRangesTileTheFile) {
  const std::string text = RangeTestText();
  std::string path = Write("tiles.txt", text);
  absl::StatusOr<Dataset> whole = ReadLibsvm(path, LibsvmOptions{});
  ASSERT_TRUE(whole.ok()) << whole.status();
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<uint64_t> cuts = {0, text.size()};
    int n = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) cuts.push_back(rng() % (text.size() + 1));
    std::sort(cuts.begin(), cuts.end());
    Dataset joined;
    joined.offsets.push_back(0);
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      absl::StatusOr<Dataset> part = ReadLibsvm(path, LibsvmOptions{}, cuts[i], cuts[i + 1]);
      ASSERT_TRUE(part.ok()) << part.status();
      joined = Concat(joined, *part);
    }
    ASSERT_EQ(joined.labels, whole->labels);
    ASSERT_EQ(joined.offsets, whole->offsets);
    ASSERT_EQ(joined.ids, whole->ids);
  }
}

// Prints parse speed on a generated ~50 MB file. A benchmark, not a timed test: run with
// --gtest_also_run_disabled_tests --gtest_filter='*ParseSpeed*'.
TEST_F(LibsvmTest, DISABLED_ParseSpeed) {
  std::mt19937_64 rng(1);
  std::string text;
  text.reserve(52 << 20);
  while (text.size() < (50u << 20)) {
    absl::StrAppend(&text, rng() % 2 == 0 ? "-1" : "+1");
    uint64_t id = 0;
    for (int i = 0; i < 40; ++i) {
      id += 1 + rng() % 25000;
      absl::StrAppend(&text, " ", id, ":", static_cast<double>(rng() % 1000000) / 1e6);
    }
    text += "\n";
  }
  std::string path = Write("speed.txt", text);
  std::string gz = dir_.Path("speed.gz");
  WriteGzipFile(gz, text);
  for (const std::string& p : {path, gz}) {
    const std::clock_t cpu_start = std::clock();
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<Dataset> data = ReadLibsvm(p, LibsvmOptions{});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
    ASSERT_TRUE(data.ok()) << data.status();
    std::printf("%s: %.1f MB of text, %zu examples, %zu features: %.3f s wall (%.0f MB/s), %.3f s cpu (%.0f MB/s)\n",
                p.c_str(), text.size() / 1e6, data->size(), data->ids.size(), seconds, text.size() / 1e6 / seconds,
                cpu_seconds, text.size() / 1e6 / cpu_seconds);
  }
  std::remove(path.c_str());
  std::remove(gz.c_str());
}

}  // namespace
}  // namespace tessera::data
