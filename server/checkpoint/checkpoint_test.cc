#include "server/checkpoint/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/checkpoint/crc32c.h"
#include "server/checkpoint/file_util.h"

namespace tessera::server {
namespace {

using tessera::v1::TableSpec;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TableSpec Spec(const std::string& name, TableSpec::Kind kind, uint64_t dim_or_size, const std::string& optimizer) {
  TableSpec s;
  s.set_name(name);
  s.set_kind(kind);
  if (kind == TableSpec::SPARSE) {
    s.set_dim(static_cast<uint32_t>(dim_or_size));
  } else {
    s.set_size(dim_or_size);
  }
  s.mutable_optimizer()->set_type(optimizer);
  s.mutable_optimizer()->set_learning_rate(optimizer == "sgd" ? 0.5f : 0.05f);
  if (optimizer == "sgd") s.mutable_optimizer()->set_momentum(0.9f);
  s.mutable_initializer()->set_type("uniform");
  s.mutable_initializer()->set_scale(0.1f);
  s.mutable_initializer()->set_seed(42);
  return s;
}

absl::StatusOr<bool> PushSparse(ShardStore& store, const std::string& table, const std::vector<uint64_t>& keys,
                                const std::vector<float>& grads, uint64_t worker = 0, uint64_t seq = 0) {
  PushArgs a;
  a.table = table;
  a.keys = keys;
  a.gradients = grads;
  a.worker_id = worker;
  a.sequence = seq;
  return store.Push(a);
}

absl::StatusOr<bool> PushDense(ShardStore& store, const std::string& table, uint64_t offset,
                               const std::vector<float>& grads, uint64_t worker = 0, uint64_t seq = 0) {
  PushArgs a;
  a.table = table;
  a.offset = offset;
  a.gradients = grads;
  a.worker_id = worker;
  a.sequence = seq;
  return store.Push(a);
}

// Every weight of a table: the given keys of a sparse table, or the whole dense range.
std::vector<float> PullAll(ShardStore& store, const std::string& table, const std::vector<uint64_t>& keys) {
  std::shared_ptr<Table> t = store.FindTable(table);
  EXPECT_NE(t, nullptr) << table;
  if (t == nullptr) return {};
  PullArgs a;
  a.table = table;
  if (t->sparse) {
    a.keys = keys;
  } else {
    a.offset = t->dense->range().begin;
    a.length = t->dense->range().size();
  }
  std::vector<float> out;
  const absl::Status s = store.Pull(a, [&](size_t n) {
    out.resize(n);
    return out.data();
  });
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

bool BitIdentical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<uint64_t> Range(uint64_t begin, uint64_t end) {
  std::vector<uint64_t> v;
  for (uint64_t k = begin; k < end; ++k) v.push_back(k);
  return v;
}

// Replaces a file's contents without fsync (the tests corrupt files thousands of times).
absl::Status Overwrite(const std::string& path, const std::string& contents) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot open ", path));
  const bool ok = std::fwrite(contents.data(), 1, contents.size(), f) == contents.size();
  return std::fclose(f) == 0 && ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("cannot write ", path));
}

// XORs one byte of a file in place (no truncation, which would make ext4 flush on close).
void XorByte(const std::string& path, size_t at, unsigned char mask) {
  FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(f, nullptr) << path;
  unsigned char c = 0;
  ASSERT_EQ(std::fseek(f, static_cast<long>(at), SEEK_SET), 0);
  ASSERT_EQ(std::fread(&c, 1, 1, f), 1u);
  c ^= mask;
  ASSERT_EQ(std::fseek(f, static_cast<long>(at), SEEK_SET), 0);
  ASSERT_EQ(std::fwrite(&c, 1, 1, f), 1u);
  ASSERT_EQ(std::fclose(f), 0);
}

void ExpectCode(const absl::Status& s, absl::StatusCode code, const std::string& needle = "") {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(needle)) << s;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::off);
    std::string tmpl = ::testing::TempDir() + "/checkpoint_test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { ASSERT_TRUE(RemoveAll(root_).ok()); }

  std::string TablePath(const std::string& prefix, uint64_t id, const std::string& table) const {
    return CheckpointDir(root_, prefix, id) + "/" + EscapeFileName(table) + ".tbl";
  }
  std::string ManifestPath(const std::string& prefix, uint64_t id) const {
    return CheckpointDir(root_, prefix, id) + "/MANIFEST";
  }

  std::string root_;
};

// Pushes `rounds` random sparse gradients over keys [0, 2000) and random dense slices from
// worker 7 with sequences 1..rounds.
void Train(ShardStore& store, const std::vector<std::string>& sparse, const std::vector<std::string>& dense, int rounds,
           uint64_t seed, uint64_t worker = 7) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0, 1);
  for (int r = 1; r <= rounds; ++r) {
    for (const std::string& name : sparse) {
      const uint32_t dim = store.FindTable(name)->spec.dim();
      std::set<uint64_t> keys;
      while (keys.size() < 300) keys.insert(rng() % 2000);
      std::vector<float> grads(keys.size() * dim);
      for (float& x : grads) x = g(rng);
      ASSERT_FALSE(*PushSparse(store, name, {keys.begin(), keys.end()}, grads, worker, r));
    }
    for (const std::string& name : dense) {
      const uint64_t size = store.FindTable(name)->spec.size();
      const uint64_t offset = rng() % (size / 2);
      std::vector<float> grads(size / 2);
      for (float& x : grads) x = g(rng);
      ASSERT_FALSE(*PushDense(store, name, offset, grads, worker, r));
    }
  }
}

TEST_F(CheckpointTest, RoundTripIsBitIdenticalForEveryOptimizer) {
  const std::vector<std::string> sparse = {"m/emb_sgd", "m/emb_adagrad", "m/emb_adam", "m/emb_ftrl"};
  const std::vector<std::string> dense = {"m/dense_adam", "m/dense_adagrad"};
  ShardStore a({.data_dir = root_});
  for (const std::string& name : sparse) {
    const std::string opt = name.substr(name.find('_') + 1);
    ASSERT_TRUE(a.CreateTable(Spec(name, TableSpec::SPARSE, 8, opt)).ok());
  }
  ASSERT_TRUE(a.CreateTable(Spec("m/dense_adam", TableSpec::DENSE, 40000, "adam")).ok());
  ASSERT_TRUE(a.CreateTable(Spec("m/dense_adagrad", TableSpec::DENSE, 20000, "adagrad")).ok());
  ASSERT_TRUE(a.CreateTable(Spec("other", TableSpec::SPARSE, 4, "sgd")).ok());
  const int kRounds = 20;
  Train(a, sparse, dense, kRounds, 1);

  auto saved = SaveCheckpoint(a, root_, "m/", 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->files_size(), 7);
  EXPECT_EQ(saved->files(6), ManifestPath("m/", 1));
  EXPECT_EQ(saved->applied_pushes(), uint64_t{kRounds} * 6);
  uint64_t rows = 40000 + 20000;
  for (const std::string& name : sparse) rows += a.FindTable(name)->sparse->num_rows();
  EXPECT_EQ(saved->rows(), rows);
  uint64_t bytes = 0;
  for (const std::string& f : saved->files()) bytes += ReadFile(f)->size();
  EXPECT_EQ(saved->bytes(), bytes);
  EXPECT_TRUE(VerifyCheckpoint(root_, "m/", 1).ok());

  // The target store has a stale table under the prefix, a same-named table with another spec,
  // and a table outside the prefix; after the load the prefix holds exactly the checkpoint.
  ShardStore b({});
  ASSERT_TRUE(b.CreateTable(Spec("m/stale", TableSpec::SPARSE, 2, "sgd")).ok());
  ASSERT_TRUE(b.CreateTable(Spec("m/emb_adam", TableSpec::SPARSE, 3, "sgd")).ok());
  ASSERT_TRUE(b.CreateTable(Spec("mine", TableSpec::SPARSE, 2, "sgd")).ok());
  auto loaded = LoadCheckpoint(b, root_, "m/", 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->rows(), rows);
  EXPECT_EQ(loaded->applied_pushes(), uint64_t{kRounds} * 6);
  EXPECT_EQ(b.FindTable("m/stale"), nullptr);
  EXPECT_NE(b.FindTable("mine"), nullptr);
  EXPECT_EQ(b.FindTable("other"), nullptr);
  EXPECT_EQ(b.FindTable("m/emb_adam")->spec.dim(), 8u);

  const std::vector<uint64_t> keys = Range(0, 2100);  // includes keys never pushed
  std::vector<std::string> all = sparse;
  all.insert(all.end(), dense.begin(), dense.end());
  for (const std::string& name : all) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(BitIdentical(PullAll(a, name, keys), PullAll(b, name, keys)));
    EXPECT_EQ(a.FindTable(name)->applied_pushes.load(), b.FindTable(name)->applied_pushes.load());
    if (a.FindTable(name)->sparse) {
      EXPECT_EQ(a.FindTable(name)->sparse->num_rows(), b.FindTable(name)->sparse->num_rows());
    }
  }
  // Optimizer state (slots, Adam's step counters) came along: the same pushes keep both identical.
  Train(a, sparse, dense, 3, 99, /*worker=*/8);
  Train(b, sparse, dense, 3, 99, /*worker=*/8);
  for (const std::string& name : all) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(BitIdentical(PullAll(a, name, keys), PullAll(b, name, keys)));
  }
  // Exactly-once state came along: pushes recorded before the checkpoint are still duplicates.
  for (const std::string& name : sparse) {
    EXPECT_TRUE(*PushSparse(b, name, {5}, std::vector<float>(8, 1.0f), 7, kRounds)) << name;
    EXPECT_TRUE(*PushSparse(b, name, {5}, std::vector<float>(8, 1.0f), 7, 1)) << name;
    EXPECT_FALSE(*PushSparse(b, name, {5}, std::vector<float>(8, 1.0f), 7, kRounds + 1)) << name;
  }
  EXPECT_TRUE(*PushDense(b, "m/dense_adam", 0, {1.0f}, 7, kRounds - 1));
}

TEST_F(CheckpointTest, EmptyPrefixAndEscapedNames) {
  EXPECT_EQ(EscapeFileName(""), "%");
  EXPECT_EQ(EscapeFileName("a/b.c_d-e"), "a%2Fb.c_d-e");
  EXPECT_EQ(EscapeFileName(".."), "%2E.");
  EXPECT_EQ(EscapeFileName("%/ "), "%25%2F%20");
  ShardStore a({});
  ASSERT_TRUE(a.CreateTable(Spec("x/y", TableSpec::SPARSE, 2, "adagrad")).ok());
  ASSERT_TRUE(a.CreateTable(Spec("z", TableSpec::DENSE, 10, "sgd")).ok());
  Train(a, {"x/y"}, {"z"}, 2, 3);
  auto saved = SaveCheckpoint(a, root_, "", 4);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_THAT(*ListDirectory(CheckpointDir(root_, "", 4)), ElementsAre("MANIFEST", "x%2Fy.tbl", "z.tbl"));
  EXPECT_THAT(*ListDirectory(root_), ElementsAre("%"));
  ShardStore b({});
  ASSERT_TRUE(LoadCheckpoint(b, root_, "", 4).ok());
  EXPECT_TRUE(BitIdentical(PullAll(a, "x/y", Range(0, 2000)), PullAll(b, "x/y", Range(0, 2000))));
  EXPECT_TRUE(BitIdentical(PullAll(a, "z", {}), PullAll(b, "z", {})));
}

TEST_F(CheckpointTest, SavingAnEmptyPrefixRecordsNoTablesAndLoadingItDropsThem) {
  ShardStore a({});
  auto saved = SaveCheckpoint(a, root_, "none/", 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->files_size(), 1);
  ASSERT_TRUE(a.CreateTable(Spec("none/t", TableSpec::SPARSE, 2, "sgd")).ok());
  ASSERT_TRUE(LoadCheckpoint(a, root_, "none/", 1).ok());
  EXPECT_EQ(a.FindTable("none/t"), nullptr);
}

TEST_F(CheckpointTest, SavingTheSameIdAgainReplacesTheCheckpoint) {
  ShardStore a({});
  ASSERT_TRUE(a.CreateTable(Spec("p/old", TableSpec::SPARSE, 2, "sgd")).ok());
  ASSERT_TRUE(a.CreateTable(Spec("p/t", TableSpec::SPARSE, 2, "adam")).ok());
  Train(a, {"p/t"}, {}, 2, 5);
  ASSERT_TRUE(SaveCheckpoint(a, root_, "p/", 9).ok());
  a.DropTables("p/old");
  Train(a, {"p/t"}, {}, 2, 6, /*worker=*/3);
  ASSERT_TRUE(SaveCheckpoint(a, root_, "p/", 9).ok());
  EXPECT_THAT(*ListDirectory(CheckpointDir(root_, "p/", 9)), ElementsAre("MANIFEST", "p%2Ft.tbl"));
  ShardStore b({});
  ASSERT_TRUE(LoadCheckpoint(b, root_, "p/", 9).ok());
  EXPECT_TRUE(BitIdentical(PullAll(a, "p/t", Range(0, 2000)), PullAll(b, "p/t", Range(0, 2000))));
  EXPECT_EQ(b.FindTable("p/old"), nullptr);
}

// Builds a store with a small sparse table (10 blocks) and a dense table (33 blocks), saves it as
// checkpoint 1 of "c/" with 4 KiB blocks, then pushes more so the store no longer equals the checkpoint.
class CorruptionTest : public CheckpointTest {
 protected:
  void SetUp() override {
    CheckpointTest::SetUp();
    ASSERT_TRUE(store_.CreateTable(Spec("c/emb", TableSpec::SPARSE, 4, "adam")).ok());
    ASSERT_TRUE(store_.CreateTable(Spec("c/w", TableSpec::DENSE, 100, "sgd")).ok());
    std::vector<float> grads(600 * 4, 0.25f);
    ASSERT_TRUE(PushSparse(store_, "c/emb", Range(0, 600), grads, 1, 1).ok());
    ASSERT_TRUE(PushDense(store_, "c/w", 0, std::vector<float>(100, 0.5f), 1, 1).ok());
    auto saved = SaveCheckpoint(store_, root_, "c/", 1, {.block_bytes = 4096});
    ASSERT_TRUE(saved.ok()) << saved.status();
    ASSERT_TRUE(PushSparse(store_, "c/emb", Range(0, 600), grads, 1, 2).ok());
    ASSERT_TRUE(PushDense(store_, "c/w", 0, std::vector<float>(100, 0.5f), 1, 2).ok());
    emb_ = store_.FindTable("c/emb");
    w_ = store_.FindTable("c/w");
    emb_values_ = PullAll(store_, "c/emb", Range(0, 50));
    w_values_ = PullAll(store_, "c/w", {});
  }

  // Loads checkpoint 1, expects `code`, and checks that the store still serves its own tables.
  void ExpectLoadFails(absl::StatusCode code, const std::string& needle = "") {
    const absl::Status s = LoadCheckpoint(store_, root_, "c/", 1).status();
    ExpectCode(s, code, needle);
    ExpectStoreUnchanged();
  }
  void ExpectStoreUnchanged() {
    EXPECT_EQ(store_.FindTable("c/emb"), emb_);
    EXPECT_EQ(store_.FindTable("c/w"), w_);
    EXPECT_TRUE(BitIdentical(PullAll(store_, "c/emb", Range(0, 50)), emb_values_));
    EXPECT_TRUE(BitIdentical(PullAll(store_, "c/w", {}), w_values_));
  }

  ShardStore store_{ShardStoreOptions{}};
  std::shared_ptr<Table> emb_, w_;
  std::vector<float> emb_values_, w_values_;
};

uint32_t ReadU32(const std::string& s, size_t at) {
  uint32_t v;
  std::memcpy(&v, s.data() + at, 4);
  return v;
}

// Byte offsets worth corrupting in a table file: all of the header and trailer, and the first,
// middle and last payload byte and every CRC byte of each block.
std::vector<size_t> InterestingOffsets(const std::string& file) {
  const size_t header = 80 + ReadU32(file, 68) + ReadU32(file, 72) + 4;
  const size_t block = ReadU32(file, 64);
  std::set<size_t> out;
  for (size_t i = 0; i < header; ++i) out.insert(i);
  for (size_t i = file.size() - 32; i < file.size(); ++i) out.insert(i);
  const size_t blocks_end = file.size() - 32;
  for (size_t start = header; start < blocks_end; start += block + 4) {
    const size_t payload = std::min(block, blocks_end - start - 4);
    for (size_t off : {size_t{0}, payload / 2, payload - 1, payload, payload + 1, payload + 2, payload + 3}) {
      out.insert(start + off);
    }
  }
  return {out.begin(), out.end()};
}

TEST_F(CorruptionTest, AFlippedByteAnywhereInATableFileIsDataLoss) {
  for (const std::string table : {"c/emb", "c/w"}) {
    const std::string path = TablePath("c/", 1, table);
    const std::string original = *ReadFile(path);
    const std::vector<size_t> offsets = InterestingOffsets(original);
    ASSERT_GT(offsets.size(), 100u);
    for (size_t at : offsets) {
      SCOPED_TRACE(absl::StrCat(table, " byte ", at));
      XorByte(path, at, 0x10);
      ExpectLoadFails(absl::StatusCode::kDataLoss, path);
      XorByte(path, at, 0x10);
      if (::testing::Test::HasFailure()) break;
    }
    ASSERT_EQ(*ReadFile(path), original);
  }
  ASSERT_TRUE(VerifyCheckpoint(root_, "c/", 1).ok());
  ASSERT_TRUE(LoadCheckpoint(store_, root_, "c/", 1).ok());
}

TEST_F(CorruptionTest, MessagesNameTheFileAndTheProblem) {
  const std::string path = TablePath("c/", 1, "c/emb");
  const std::string original = *ReadFile(path);
  const size_t header = 80 + ReadU32(original, 68) + ReadU32(original, 72) + 4;
  const size_t block = ReadU32(original, 64);
  ASSERT_EQ(block, 4096u);  // Adam dim-4 rows are 64 bytes (key, step, 4 weights, 8 slots)
  ASSERT_EQ(original.size(), header + 600 * 64 + 10 * 4 + 32);

  std::string bad = original;
  bad[header + 3 * (block + 4) + 17] ^= 1;
  ASSERT_TRUE(Overwrite(path, bad).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, path + ": block 3 CRC mismatch (stored 0x");

  ASSERT_TRUE(Overwrite(path, original.substr(0, header + 7 * (block + 4) + 12)).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, path + ": truncated: expected 4096 bytes of block 7, found 12");

  ASSERT_TRUE(Overwrite(path, original.substr(0, header + 2 * (block + 4) + block + 2)).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, "truncated: expected 4 bytes of the CRC of block 2, found 2");

  ASSERT_TRUE(Overwrite(path, original.substr(0, original.size() - 5)).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, "truncated: expected 32 bytes of trailer, found 27");

  ASSERT_TRUE(Overwrite(path, original + "junk").ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, "4 unexpected bytes after the trailer");

  bad = original;
  bad[0] = 'X';
  ASSERT_TRUE(Overwrite(path, bad).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, "not a Tessera table file");

  bad = original;
  bad[8] = 2;  // format version
  ASSERT_TRUE(Overwrite(path, bad).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, "format version 2");

  bad = original;
  bad[header - 1] ^= 1;
  ASSERT_TRUE(Overwrite(path, bad).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, "header CRC mismatch");

  ASSERT_TRUE(RemoveFile(path).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, path + ": missing (listed in MANIFEST)");
  ASSERT_TRUE(Overwrite(path, original).ok());
  ASSERT_TRUE(LoadCheckpoint(store_, root_, "c/", 1).ok());
}

// Headers that pass their CRC but describe nonsense (a buggy or hostile writer) are refused
// without allocating what they claim.
TEST_F(CorruptionTest, CraftedHeadersWithValidCrcsAreDataLoss) {
  const std::string path = TablePath("c/", 1, "c/emb");
  const std::string original = *ReadFile(path);
  const size_t spec_len = ReadU32(original, 68), filter_len = ReadU32(original, 72);
  const size_t header = 80 + spec_len + filter_len + 4;
  auto with = [&](size_t at, const void* value, size_t n) {
    std::string f = original;
    std::memcpy(f.data() + at, value, n);
    const uint32_t crc = Crc32c(f.data(), header - 4);
    std::memcpy(f.data() + header - 4, &crc, 4);
    return f;
  };
  const uint64_t huge = uint64_t{1} << 60, zero = 0, one_more = 600 + 1;
  const uint32_t kind = 3, no_blocks = 0, spec_plus = static_cast<uint32_t>(spec_len + 1),
                 filter_minus = static_cast<uint32_t>(filter_len - 1);
  const struct {
    std::string file;
    std::string needle;
  } cases[] = {
      {with(32, &huge, 8), "implausible header"},
      {with(24, &zero, 8), "inconsistent header"},
      {with(64, &no_blocks, 4), "inconsistent header"},
      {with(32, &one_more, 8), "truncated: expected 1600 bytes of block 9"},
      {with(12, &kind, 4), "unknown table kind 3"},
      {with(80 + spec_len, &huge, 8), "exactly-once state of"},
      {with(72, &filter_minus, 4), "header CRC mismatch"},
      {with(68, &spec_plus, 4).replace(72, 4, std::string(reinterpret_cast<const char*>(&filter_minus), 4)), ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.needle);
    std::string f = c.file;
    if (c.needle.empty()) {  // re-seal the last case, whose two length fields both changed
      const uint32_t crc = Crc32c(f.data(), header - 4);
      std::memcpy(f.data() + header - 4, &crc, 4);
    }
    ASSERT_TRUE(Overwrite(path, f).ok());
    ExpectLoadFails(absl::StatusCode::kDataLoss, c.needle);
  }
  ASSERT_TRUE(Overwrite(path, original).ok());
  ASSERT_TRUE(LoadCheckpoint(store_, root_, "c/", 1).ok());
}

TEST_F(CorruptionTest, TruncatedTableFilesAreDataLoss) {
  for (const std::string table : {"c/emb", "c/w"}) {
    const std::string path = TablePath("c/", 1, table);
    const std::string original = *ReadFile(path);
    const size_t header = 80 + ReadU32(original, 68) + ReadU32(original, 72) + 4;
    for (size_t len : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{79}, size_t{80}, header - 1, header,
                       header + 1, header + 4096, header + 4099, header + 4100, original.size() / 2,
                       original.size() - 33, original.size() - 32, original.size() - 1}) {
      SCOPED_TRACE(absl::StrCat(table, " truncated to ", len));
      ASSERT_TRUE(Overwrite(path, original.substr(0, len)).ok());
      ExpectLoadFails(absl::StatusCode::kDataLoss, "truncated");
    }
    ASSERT_TRUE(Overwrite(path, original).ok());
  }
  ASSERT_TRUE(LoadCheckpoint(store_, root_, "c/", 1).ok());
}

TEST_F(CorruptionTest, ManifestDamage) {
  const std::string path = ManifestPath("c/", 1);
  const std::string original = *ReadFile(path);
  for (size_t at = 0; at < original.size(); ++at) {
    SCOPED_TRACE(absl::StrCat("manifest byte ", at));
    for (unsigned char x : {0x01, 0x20}) {
      XorByte(path, at, x);
      ExpectLoadFails(absl::StatusCode::kDataLoss, path);
      XorByte(path, at, x);
    }
    if (::testing::Test::HasFailure()) break;
  }
  for (size_t len :
       {size_t{0}, size_t{1}, size_t{20}, original.size() / 2, original.size() - 10, original.size() - 1}) {
    SCOPED_TRACE(absl::StrCat("manifest truncated to ", len));
    ASSERT_TRUE(Overwrite(path, original.substr(0, len)).ok());
    ExpectLoadFails(absl::StatusCode::kDataLoss, path);
  }
  // An unfinished save (no MANIFEST) and a checkpoint that was never written are NOT_FOUND.
  ASSERT_TRUE(RemoveFile(path).ok());
  ExpectLoadFails(absl::StatusCode::kNotFound, "is incomplete");
  EXPECT_THAT(*ListCheckpoints(root_, "c/"), ElementsAre());
  const absl::Status missing = LoadCheckpoint(store_, root_, "c/", 2).status();
  ExpectCode(missing, absl::StatusCode::kNotFound, "checkpoint 2 of prefix 'c/' does not exist");
  ExpectCode(LoadCheckpoint(store_, root_ + "/elsewhere", "c/", 1).status(), absl::StatusCode::kNotFound);
  ExpectStoreUnchanged();
  ASSERT_TRUE(Overwrite(path, original).ok());
  ASSERT_TRUE(LoadCheckpoint(store_, root_, "c/", 1).ok());
}

TEST_F(CorruptionTest, FilesFromAnotherCheckpointAreRejected) {
  ASSERT_TRUE(SaveCheckpoint(store_, root_, "c/", 2).ok());
  // A table file of checkpoint 2 copied into checkpoint 1.
  const std::string path = TablePath("c/", 1, "c/emb");
  const std::string original = *ReadFile(path);
  ASSERT_TRUE(Overwrite(path, *ReadFile(TablePath("c/", 2, "c/emb"))).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, path);
  ASSERT_TRUE(Overwrite(path, original).ok());
  // Checkpoint 2's MANIFEST copied into checkpoint 1.
  ASSERT_TRUE(Overwrite(ManifestPath("c/", 1), *ReadFile(ManifestPath("c/", 2))).ok());
  ExpectLoadFails(absl::StatusCode::kDataLoss, "belongs to checkpoint 2, not 1");
}

TEST_F(CorruptionTest, LatestValidCheckpointSkipsCorruptAndUnfinishedOnes) {
  ASSERT_TRUE(SaveCheckpoint(store_, root_, "c/", 2).ok());
  ASSERT_TRUE(SaveCheckpoint(store_, root_, "c/", 3).ok());
  EXPECT_THAT(*ListCheckpoints(root_, "c/"), ElementsAre(1, 2, 3));
  EXPECT_EQ(*LatestValidCheckpoint(root_, "c/"), 3u);
  EXPECT_EQ(*LatestValidCheckpoint(root_, "c/", 2), 2u);

  // Newest corrupt: its MANIFEST is fine (it is still listed) but a block is not.
  const std::string path = TablePath("c/", 3, "c/w");
  std::string bad = *ReadFile(path);
  bad[bad.size() / 2] ^= 0x40;
  ASSERT_TRUE(Overwrite(path, bad).ok());
  EXPECT_THAT(*ListCheckpoints(root_, "c/"), ElementsAre(1, 2, 3));
  EXPECT_EQ(*LatestValidCheckpoint(root_, "c/"), 2u);

  // Second newest unfinished.
  ASSERT_TRUE(RemoveFile(ManifestPath("c/", 2)).ok());
  EXPECT_THAT(*ListCheckpoints(root_, "c/"), ElementsAre(1, 3));
  EXPECT_EQ(*LatestValidCheckpoint(root_, "c/"), 1u);
  ASSERT_TRUE(LoadCheckpoint(store_, root_, "c/", *LatestValidCheckpoint(root_, "c/")).ok());

  ExpectCode(LatestValidCheckpoint(root_, "c/", 0).status(), absl::StatusCode::kNotFound, "no valid checkpoint");
  ASSERT_TRUE(DeleteCheckpoint(root_, "c/", 1).ok());
  ExpectCode(DeleteCheckpoint(root_, "c/", 1), absl::StatusCode::kNotFound);
  ExpectCode(LatestValidCheckpoint(root_, "c/").status(), absl::StatusCode::kNotFound);
  EXPECT_THAT(*ListCheckpoints(root_, "c/"), ElementsAre(3));
  EXPECT_THAT(*ListCheckpoints(root_, "nothing/"), ElementsAre());
}

TEST_F(CheckpointTest, DenseRangeMustMatchThisShardsRange) {
  ShardStore a({});
  ASSERT_TRUE(a.CreateTable(Spec("d", TableSpec::DENSE, 100, "adagrad")).ok());
  ASSERT_TRUE(SaveCheckpoint(a, root_, "d", 1).ok());

  ShardStore b({});
  tessera::v1::ShardMap map;
  map.set_version(1);
  map.set_virtual_nodes(16);
  map.add_shards()->set_shard_id(0);
  map.add_shards()->set_shard_id(1);
  ASSERT_TRUE(b.UpdateShardMap(map, 0).ok());
  ASSERT_TRUE(b.CreateTable(Spec("d", TableSpec::DENSE, 100, "adagrad")).ok());
  const std::shared_ptr<Table> before = b.FindTable("d");
  const DenseRange mine = before->dense->range();
  ASSERT_NE(mine.size(), 100u);
  const absl::Status s = LoadCheckpoint(b, root_, "d", 1).status();
  ExpectCode(s, absl::StatusCode::kFailedPrecondition, "saved with range [0, 100)");
  ExpectCode(s, absl::StatusCode::kFailedPrecondition,
             absl::StrCat("this shard now owns [", mine.begin, ", ", mine.end, ")"));
  EXPECT_EQ(b.FindTable("d"), before);
}

// Pushes from several workers keep running while checkpoints are taken. With SGD (lr 1, gradient
// 1), each worker's key weighs -(number of its pushes applied); a consistent checkpoint restores a
// filter that recognizes exactly those pushes as duplicates.
TEST_F(CheckpointTest, SaveUnderConcurrentPushesIsConsistent) {
  ShardStore a({});
  TableSpec spec;
  spec.set_name("c/emb");
  spec.set_kind(TableSpec::SPARSE);
  spec.set_dim(1);
  spec.mutable_optimizer()->set_type("sgd");
  spec.mutable_optimizer()->set_learning_rate(1.0f);
  ASSERT_TRUE(a.CreateTable(spec).ok());
  // A larger table under the same prefix makes each save last longer.
  ASSERT_TRUE(a.CreateTable(Spec("c/big", TableSpec::SPARSE, 16, "adagrad")).ok());
  std::vector<float> big_grads(20000 * 16, 0.01f);
  ASSERT_TRUE(PushSparse(a, "c/big", Range(0, 20000), big_grads).ok());

  constexpr int kWorkers = 3;
  std::atomic<bool> stop{false}, failed{false};
  std::atomic<uint64_t> pushed[kWorkers] = {};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWorkers; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t seq = 1; !stop.load(); ++seq) {
        auto r = PushSparse(a, "c/emb", {static_cast<uint64_t>(t)}, {1.0f}, 100 + t, seq);
        if (!r.ok() || *r) {
          ADD_FAILURE() << "push " << seq << " of worker " << t << ": " << r.status();
          failed = true;
          return;
        }
        pushed[t].store(seq);
      }
    });
  }
  constexpr int kSaves = 8;
  // Every worker makes progress before each save.
  auto advance = [&](uint64_t(&mark)[kWorkers]) {
    for (int t = 0; t < kWorkers; ++t) {
      while (pushed[t].load() < mark[t] + 1000 && !failed.load()) std::this_thread::yield();
      mark[t] = pushed[t].load();
    }
  };
  uint64_t mark[kWorkers] = {};
  for (int id = 1; id <= kSaves; ++id) {
    advance(mark);
    auto saved = SaveCheckpoint(a, root_, "c/", id);
    ASSERT_TRUE(saved.ok()) << saved.status();
  }
  advance(mark);
  stop = true;
  for (auto& th : threads) th.join();

  for (int id = 1; id <= kSaves; ++id) {
    SCOPED_TRACE(absl::StrCat("checkpoint ", id));
    ShardStore b({});
    auto loaded = LoadCheckpoint(b, root_, "c/", id);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const std::vector<float> w = PullAll(b, "c/emb", Range(0, kWorkers));
    uint64_t total = 0;
    for (int t = 0; t < kWorkers; ++t) {
      const uint64_t applied = static_cast<uint64_t>(-w[t]);
      ASSERT_EQ(static_cast<float>(-static_cast<double>(applied)), w[t]);
      EXPECT_GT(applied, 0u);
      // Probe the sequences around `applied` (older ones are outside the filter's window and
      // count as seen anyway): exactly those up to `applied` are duplicates.
      const uint64_t lo = applied > 5000 ? applied - 5000 : 1;
      const uint64_t hi = std::min<uint64_t>(pushed[t].load(), applied + 5000);
      uint64_t duplicates = 0;
      for (uint64_t seq = lo; seq <= hi; ++seq) {
        auto r = PushSparse(b, "c/emb", {static_cast<uint64_t>(t)}, {1.0f}, 100 + t, seq);
        ASSERT_TRUE(r.ok());
        if (*r) {
          ++duplicates;
          ASSERT_LE(seq, applied) << "worker " << t;
        }
      }
      EXPECT_EQ(duplicates, applied - lo + 1) << "worker " << t;
      total += applied;
    }
    // applied_pushes counts c/emb's pushes plus the one bulk push to c/big.
    EXPECT_EQ(loaded->applied_pushes(), total + 1);
  }
}

TEST_F(CheckpointTest, HooksUseTheDefaultRootUnlessTheRequestNamesOne) {
  ShardStore a({});
  ASSERT_TRUE(a.CreateTable(Spec("h/t", TableSpec::SPARSE, 2, "sgd")).ok());
  CheckpointHooks hooks = MakeCheckpointHooks(&a, root_ + "/default");
  tessera::v1::SaveCheckpointRequest save;
  save.set_prefix("h/");
  save.set_checkpoint_id(5);
  ASSERT_TRUE(hooks.save(save).ok());
  EXPECT_TRUE(VerifyCheckpoint(root_ + "/default", "h/", 5).ok());
  save.set_dir(root_ + "/explicit");
  ASSERT_TRUE(hooks.save(save).ok());
  EXPECT_TRUE(VerifyCheckpoint(root_ + "/explicit/shard-0", "h/", 5).ok());

  tessera::v1::LoadCheckpointRequest load;
  load.set_prefix("h/");
  load.set_checkpoint_id(5);
  load.set_dir(root_ + "/explicit");
  EXPECT_TRUE(hooks.load(load).ok());
  load.set_checkpoint_id(6);
  ExpectCode(hooks.load(load).status(), absl::StatusCode::kNotFound);

  CheckpointHooks no_root = MakeCheckpointHooks(&a, "");
  ExpectCode(no_root.save(tessera::v1::SaveCheckpointRequest()).status(), absl::StatusCode::kFailedPrecondition,
             "no checkpoint directory");
}

// Prints save / load throughput for 1M rows of dim 8 with Adagrad. Not a timed test; run with
// --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'.
TEST_F(CheckpointTest, DISABLED_Throughput) {
  spdlog::set_level(spdlog::level::info);  // the save logs how long pushes were paused
  ShardStore a({});
  ASSERT_TRUE(a.CreateTable(Spec("bench/emb", TableSpec::SPARSE, 8, "adagrad")).ok());
  constexpr uint64_t kRows = 1000000, kBatch = 10000;
  std::vector<float> grads(kBatch * 8, 0.5f);
  for (uint64_t k = 0; k < kRows; k += kBatch)
    ASSERT_TRUE(PushSparse(a, "bench/emb", Range(k, k + kBatch), grads).ok());
  std::string data(64 << 20, 'x');
  auto t0 = std::chrono::steady_clock::now();
  volatile uint32_t sink = Crc32c(data.data(), data.size());
  (void)sink;
  auto t1 = std::chrono::steady_clock::now();
  const double crc_s = std::chrono::duration<double>(t1 - t0).count();
  auto saved = SaveCheckpoint(a, root_, "bench/", 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  auto t2 = std::chrono::steady_clock::now();
  ShardStore b({});
  auto loaded = LoadCheckpoint(b, root_, "bench/", 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto t3 = std::chrono::steady_clock::now();
  ASSERT_TRUE(VerifyCheckpoint(root_, "bench/", 1).ok());
  auto t4 = std::chrono::steady_clock::now();
  const double mb = static_cast<double>(saved->bytes()) / (1 << 20);
  const double save_s = std::chrono::duration<double>(t2 - t1).count();
  const double load_s = std::chrono::duration<double>(t3 - t2).count();
  const double verify_s = std::chrono::duration<double>(t4 - t3).count();
  std::printf("crc32c (%s): %.0f MiB/s\n", Crc32cHardwareAvailable() ? "sse4.2" : "portable", 64 / crc_s);
  std::printf("%llu rows, %.1f MiB: save %.3f s (%.0f MiB/s), load %.3f s (%.0f MiB/s), verify %.3f s (%.0f MiB/s)\n",
              static_cast<unsigned long long>(saved->rows()), mb, save_s, mb / save_s, load_s, mb / load_s, verify_s,
              mb / verify_s);
}

}  // namespace
}  // namespace tessera::server
