#include "server/shard_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

namespace tessera::server {
namespace {

using ::testing::HasSubstr;
using tessera::v1::TableSpec;

TableSpec Sparse(const std::string& name, uint32_t dim) {
  TableSpec s;
  s.set_name(name);
  s.set_kind(TableSpec::SPARSE);
  s.set_dim(dim);
  s.mutable_optimizer()->set_type("sgd");
  s.mutable_optimizer()->set_learning_rate(1.0f);
  return s;
}

TableSpec Dense(const std::string& name, uint64_t size) {
  TableSpec s;
  s.set_name(name);
  s.set_kind(TableSpec::DENSE);
  s.set_size(size);
  s.mutable_optimizer()->set_type("sgd");
  s.mutable_optimizer()->set_learning_rate(1.0f);
  return s;
}

class ShardStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store_.CreateTable(Sparse("emb", 2)).ok());
    ASSERT_TRUE(store_.CreateTable(Dense("w", 10)).ok());
  }
  absl::Status PushSparse(std::vector<uint64_t> keys, std::vector<float> g, uint64_t worker = 0, uint64_t seq = 0) {
    PushArgs a;
    a.table = "emb";
    a.keys = keys;
    a.gradients = g;
    a.worker_id = worker;
    a.sequence = seq;
    return store_.Push(a).status();
  }
  absl::StatusOr<std::vector<float>> PullSparse(std::vector<uint64_t> keys, const std::string& table = "emb",
                                                bool averaged = false) {
    PullArgs a;
    a.table = table;
    a.keys = keys;
    a.averaged = averaged;
    std::vector<float> out;
    absl::Status s = store_.Pull(a, [&](size_t n) {
      out.resize(n);
      return out.data();
    });
    if (!s.ok()) return s;
    return out;
  }
  ShardStore store_{ShardStoreOptions{}};
};

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& needle) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(needle));
}

TEST_F(ShardStoreTest, CreateTableIsIdempotentAndRefusesAConflictingSpec) {
  EXPECT_FALSE(*store_.CreateTable(Sparse("emb", 2)));
  ExpectError(store_.CreateTable(Sparse("emb", 3)).status(), absl::StatusCode::kAlreadyExists, "'emb' already exists");
  ExpectError(store_.CreateTable(Sparse("bad name", 2)).status(), absl::StatusCode::kInvalidArgument, "character ' '");
  ExpectError(store_.CreateTable(Sparse("zero", 0)).status(), absl::StatusCode::kInvalidArgument, "dim = 0");
  ExpectError(store_.CreateTable(Dense("empty", 0)).status(), absl::StatusCode::kInvalidArgument, "size = 0");
  auto bad_opt = Sparse("o", 1);
  bad_opt.mutable_optimizer()->set_learning_rate(-1);
  ExpectError(store_.CreateTable(bad_opt).status(), absl::StatusCode::kInvalidArgument, "learning_rate = -1");
}

TEST_F(ShardStoreTest, WrongValueLengthIsRejectedNamingTheDimension) {
  ExpectError(PushSparse({1, 2}, {1, 2, 3}), absl::StatusCode::kInvalidArgument,
              "gradients hold 3 floats but 2 keys x dim 2 of table 'emb' need 4");
}

TEST_F(ShardStoreTest, UnknownTableIsNotFound) {
  ExpectError(PullSparse({1}, "nope").status(), absl::StatusCode::kNotFound, "table 'nope' does not exist");
}

TEST_F(ShardStoreTest, NonFiniteGradientsAreRejectedAndNeverStored) {
  ExpectError(PushSparse({1, 2}, {0, 0, 0, NAN}), absl::StatusCode::kInvalidArgument,
              "gradient for key 2 element 1 is NaN");
  ExpectError(PushSparse({1, 2}, {INFINITY, 0, 0, 0}), absl::StatusCode::kInvalidArgument, "is +Inf");
  auto v = PullSparse({1, 2});
  ASSERT_TRUE(v.ok());
  for (float x : *v) EXPECT_EQ(x, 0.0f) << "nothing of a rejected push was applied";
}

TEST_F(ShardStoreTest, AveragedPullNeedsATableThatKeepsAnAverage) {
  ExpectError(PullSparse({1}, "emb", /*averaged=*/true).status(), absl::StatusCode::kFailedPrecondition,
              "table 'emb' keeps no weight average");
  auto spec = Sparse("avg", 2);
  spec.mutable_optimizer()->set_average_decay(0.5f);
  ASSERT_TRUE(store_.CreateTable(spec).ok());
  PushArgs a;
  a.table = "avg";
  const std::vector<uint64_t> keys = {5};
  const std::vector<float> g = {1, -1};
  a.keys = keys;
  a.gradients = g;
  ASSERT_TRUE(store_.Push(a).ok());
  auto w = PullSparse({5}, "avg");
  auto avg = PullSparse({5}, "avg", true);
  ASSERT_TRUE(w.ok() && avg.ok());
  EXPECT_EQ(*w, (std::vector<float>{-1, 1}));
  EXPECT_EQ(*avg, (std::vector<float>{-0.5f, 0.5f}));
  auto bad = Sparse("bad_avg", 2);
  bad.mutable_optimizer()->set_average_decay(1.5f);
  ExpectError(store_.CreateTable(bad).status(), absl::StatusCode::kInvalidArgument, "average_decay = 1.5");
}

TEST_F(ShardStoreTest, DuplicateAndUnsortedKeysAreRejected) {
  ExpectError(PushSparse({4, 4}, {1, 1, 1, 1}), absl::StatusCode::kInvalidArgument, "duplicate key 4");
  ExpectError(PullSparse({9, 3}).status(), absl::StatusCode::kInvalidArgument, "keys must be sorted ascending");
}

TEST_F(ShardStoreTest, EmptyRequestsAreRejected) {
  ExpectError(PullSparse({}).status(), absl::StatusCode::kInvalidArgument, "has no keys");
  PullArgs a;
  a.table = "w";
  std::vector<float> out;
  ExpectError(store_.Pull(a, [&](size_t n) { out.resize(n); return out.data(); }), absl::StatusCode::kInvalidArgument,
              "has length 0");
}

TEST_F(ShardStoreTest, DenseRangeOutsideTheTableIsOutOfRange) {
  PushArgs a;
  a.table = "w";
  a.offset = 8;
  std::vector<float> g(5, 1.0f);
  a.gradients = g;
  ExpectError(store_.Push(a).status(), absl::StatusCode::kOutOfRange, "range [8, 13) is outside dense table 'w' of size 10");
}

TEST_F(ShardStoreTest, RepeatedSequenceIsAppliedOnce) {
  ASSERT_TRUE(PushSparse({1}, {1, 1}, 77, 1).ok());
  PushArgs a;
  a.table = "emb";
  std::vector<uint64_t> k = {1};
  std::vector<float> g = {1, 1};
  a.keys = k;
  a.gradients = g;
  a.worker_id = 77;
  a.sequence = 1;
  auto dup = store_.Push(a);
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(*dup);
  EXPECT_EQ(*PullSparse({1}), (std::vector<float>{-1, -1}));
  // A rejected push does not consume its sequence.
  ASSERT_FALSE(PushSparse({1}, {NAN, 1}, 77, 2).ok());
  ASSERT_TRUE(PushSparse({1}, {1, 1}, 77, 2).ok());
  EXPECT_EQ(*PullSparse({1}), (std::vector<float>{-2, -2}));
}

TEST_F(ShardStoreTest, KeysOfAnotherShardAreRefusedWithTheMapVersion) {
  tessera::v1::ShardMap map;
  map.set_version(3);
  for (uint32_t id : {0, 1}) {
    auto* s = map.add_shards();
    s->set_shard_id(id);
  }
  ASSERT_EQ(*store_.UpdateShardMap(map, 0), 3u);
  Partitioner part({0, 1});
  uint64_t mine = 0, theirs = 0;
  for (uint64_t k = 1; mine == 0 || theirs == 0; ++k) (part.ShardIdForKey(k) == 0 ? mine : theirs) = k;
  EXPECT_TRUE(PullSparse({mine}).ok());
  auto s = PullSparse({theirs}).status();
  ExpectError(s, absl::StatusCode::kFailedPrecondition, "belongs to shard 1");
  EXPECT_EQ(s.GetPayload(kShardMapVersionPayload).value_or(absl::Cord()), "3");
  // Stale request versions are refused too; an older map never replaces a newer one.
  PullArgs a;
  a.table = "emb";
  std::vector<uint64_t> keys = {mine};
  a.keys = keys;
  a.shard_map_version = 2;
  std::vector<float> out;
  ExpectError(store_.Pull(a, [&](size_t n) { out.resize(n); return out.data(); }),
              absl::StatusCode::kFailedPrecondition, "stale shard map");
  map.set_version(2);
  EXPECT_EQ(*store_.UpdateShardMap(map, 0), 3u);
}

}  // namespace
}  // namespace tessera::server
