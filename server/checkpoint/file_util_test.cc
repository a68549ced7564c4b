#include "server/checkpoint/file_util.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

namespace tessera::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/file_util_test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { ASSERT_TRUE(RemoveAll(dir_).ok()); }
  std::string dir_;
};

TEST_F(FileUtilTest, AtomicWriteReplacesTheFileAndLeavesNoTemporaryFiles) {
  const std::string path = dir_ + "/f";
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second version").ok());
  EXPECT_EQ(*ReadFile(path), "second version");
  EXPECT_THAT(*ListDirectory(dir_), ElementsAre("f"));
}

TEST_F(FileUtilTest, UncommittedWriterLeavesNothingBehind) {
  const std::string path = dir_ + "/f";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  {
    auto w = AtomicFileWriter::Create(path);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->Append("new contents that are never committed").ok());
  }
  EXPECT_EQ(*ReadFile(path), "old");
  EXPECT_THAT(*ListDirectory(dir_), ElementsAre("f"));
}

TEST_F(FileUtilTest, MixedSmallAndLargeAppendsRoundTrip) {
  const std::string path = dir_ + "/big";
  std::string expected;
  auto w = AtomicFileWriter::Create(path);
  ASSERT_TRUE(w.ok());
  for (int i = 0; i < 50; ++i) {
    const std::string piece(i % 3 == 0 ? (size_t{1} << 19) + i : 1000 + i, static_cast<char>('a' + i % 26));
    ASSERT_TRUE((*w)->Append(piece).ok());
    expected += piece;
  }
  EXPECT_EQ((*w)->size(), expected.size());
  ASSERT_TRUE((*w)->Commit().ok());
  EXPECT_EQ(*ReadFile(path), expected);
}

TEST_F(FileUtilTest, SequentialReaderReportsShortReadsAtTheEnd) {
  const std::string path = dir_ + "/f";
  ASSERT_TRUE(WriteFileAtomically(path, "0123456789").ok());
  auto r = SequentialFileReader::Open(path);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->size(), 10u);
  std::string buf;
  ASSERT_TRUE((*r)->Read(4, &buf).ok());
  EXPECT_EQ(buf, "0123");
  ASSERT_TRUE((*r)->Read(100, &buf).ok());
  EXPECT_EQ(buf, "456789");
  ASSERT_TRUE((*r)->Read(1, &buf).ok());
  EXPECT_EQ(buf, "");
  EXPECT_EQ((*r)->position(), 10u);
}

TEST_F(FileUtilTest, ErrorsNameThePathAndCarryTheErrnoCode) {
  const absl::StatusOr<std::string> missing = ReadFile(dir_ + "/nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(dir_ + "/nope"));
  EXPECT_EQ(WriteFileAtomically(dir_ + "/no/such/dir/f", "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ListDirectory(dir_ + "/nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RemoveFile(dir_ + "/nope").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(RemoveAll(dir_ + "/nope").ok());
}

TEST_F(FileUtilTest, CreateDirectoriesMakesParentsAndRefusesFilesInTheWay) {
  ASSERT_TRUE(CreateDirectories(dir_ + "/a/b//c/").ok());
  ASSERT_TRUE(CreateDirectories(dir_ + "/a/b/c").ok());
  EXPECT_TRUE(*PathExists(dir_ + "/a/b/c"));
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/a/file", "x").ok());
  const absl::Status s = CreateDirectories(dir_ + "/a/file/d");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("is not a directory"));
  EXPECT_FALSE(*PathExists(dir_ + "/a/file/d"));
}

TEST(DirNameTest, Cases) {
  EXPECT_EQ(DirName("a/b/c"), "a/b");
  EXPECT_EQ(DirName("c"), ".");
  EXPECT_EQ(DirName("/c"), "/");
}

}  // namespace
}  // namespace tessera::server
