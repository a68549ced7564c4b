// The sharded parameter store against 3 real tessera-server processes: client routing and fan-out
// (answers in the caller's key order, duplicate keys summed), dense tensors split across shards,
// stale shard maps refreshed and retried, exactly-once re-sends, and bad input refused precisely by
// every shard.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/kv_client.h"
#include "common/partition.h"
#include "common/rpc.h"
#include "tessera/v1/parameter.grpc.pb.h"
#include "tests/testing/daemons.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using tessera::v1::TableSpec;

// A shard map source whose map the test can change (as a coordinator would).
class MutableMaps final : public client::ShardMapSource {
 public:
  explicit MutableMaps(tessera::v1::ShardMap map) : map_(std::move(map)) {}
  absl::StatusOr<tessera::v1::ShardMap> Fetch() override {
    absl::MutexLock lock(&mu_);
    ++fetches_;
    return map_;
  }
  void Set(tessera::v1::ShardMap map) {
    absl::MutexLock lock(&mu_);
    map_ = std::move(map);
  }

 private:
  absl::Mutex mu_;
  tessera::v1::ShardMap map_ ABSL_GUARDED_BY(mu_);
  int fetches_ ABSL_GUARDED_BY(mu_) = 0;
};

class ShardedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> addresses;
    for (int i = 0; i < 3; ++i) {
      auto d = testing::StartServer(dir_.path(), absl::StrCat("s", i));
      ASSERT_TRUE(d.ok()) << d.status();
      addresses.push_back(d->address);
      servers_.push_back(std::move(d).value());
    }
    map_ = client::MakeStaticShardMap(addresses);
    map_.set_version(5);
    auto maps = std::make_unique<MutableMaps>(map_);
    maps_ = maps.get();
    auto c = client::KvClient::Create(std::move(maps));
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(c).value();
    ASSERT_TRUE(client_->InstallShardMap().ok());

    TableSpec emb;
    emb.set_name("emb");
    emb.set_kind(TableSpec::SPARSE);
    emb.set_dim(2);
    emb.mutable_optimizer()->set_type("sgd");
    emb.mutable_optimizer()->set_learning_rate(1.0f);
    ASSERT_TRUE(client_->CreateTable(emb).ok());
    TableSpec dense;
    dense.set_name("w");
    dense.set_kind(TableSpec::DENSE);
    dense.set_size(1000);
    dense.mutable_optimizer()->set_type("sgd");
    dense.mutable_optimizer()->set_learning_rate(1.0f);
    ASSERT_TRUE(client_->CreateTable(dense).ok());
  }

  std::unique_ptr<tessera::v1::ParameterService::Stub> Stub(int i) {
    return tessera::v1::ParameterService::NewStub(CreateChannel(servers_[i].address));
  }

  testing::TempDir dir_;
  std::vector<testing::Daemon> servers_;
  tessera::v1::ShardMap map_;
  MutableMaps* maps_ = nullptr;
  std::unique_ptr<client::KvClient> client_;
};

TEST_F(ShardedTest, KeysFanOutToTheirShardsAndComeBackInCallerOrder) {
  std::mt19937_64 rng(11);
  std::vector<uint64_t> keys(30000);
  for (auto& k : keys) k = rng() % 20000;  // many duplicates, no order
  std::vector<float> grads(keys.size() * 2);
  std::map<uint64_t, std::pair<double, double>> expected;  // key -> summed gradient
  for (size_t i = 0; i < keys.size(); ++i) {
    grads[2 * i] = static_cast<float>(i % 7);
    grads[2 * i + 1] = -1.0f;
    expected[keys[i]].first += grads[2 * i];
    expected[keys[i]].second += grads[2 * i + 1];
  }
  ASSERT_TRUE(client_->Push("emb", keys, grads).ok());
  std::vector<float> out(keys.size() * 2);
  ASSERT_TRUE(client_->Pull("emb", keys, absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(out[2 * i], -expected[keys[i]].first) << "position " << i << " key " << keys[i];
    ASSERT_EQ(out[2 * i + 1], -expected[keys[i]].second) << "position " << i;
  }
  // Every shard holds exactly the distinct keys the partitioner gives it.
  Partitioner part({0, 1, 2});
  std::vector<uint64_t> per_shard(3);
  for (const auto& [k, g] : expected) ++per_shard[part.ShardIdForKey(k)];
  auto st = client_->ServerStatus();
  ASSERT_EQ(st.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(st[i].ok());
    EXPECT_EQ(st[i]->tables(0).rows(), per_shard[i]) << "shard " << i;
    EXPECT_GT(per_shard[i], expected.size() / 4) << "load is spread";
    EXPECT_EQ(st[i]->pushes(), 1u) << "one logical push is one RPC per shard";
  }
}

TEST_F(ShardedTest, DenseTensorIsSplitInContiguousRanges) {
  std::vector<float> g(1000);
  for (int i = 0; i < 1000; ++i) g[i] = static_cast<float>(i);
  ASSERT_TRUE(client_->PushDense("w", 0, g).ok());
  std::vector<float> slice(500);
  ASSERT_TRUE(client_->PullDense("w", 250, absl::MakeSpan(slice)).ok());  // spans all three shards
  for (int i = 0; i < 500; ++i) ASSERT_EQ(slice[i], -static_cast<float>(250 + i));
  auto st = client_->ServerStatus();
  uint64_t next = 0;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(st[i].ok());
    const auto& t = st[i]->tables(1);
    ASSERT_EQ(t.name(), "w");
    EXPECT_EQ(t.range_begin(), next);
    next = t.range_end();
  }
  EXPECT_EQ(next, 1000u);
}

TEST_F(ShardedTest, StaleShardMapIsRefreshedAndRetried) {
  // The cluster moves to map version 6; the client still holds 5.
  map_.set_version(6);
  for (int i = 0; i < 3; ++i) {
    auto stub = Stub(i);
    grpc::ClientContext ctx;
    tessera::v1::UpdateShardMapRequest req;
    *req.mutable_shard_map() = map_;
    req.set_shard_id(i);
    tessera::v1::UpdateShardMapResponse resp;
    ASSERT_TRUE(stub->UpdateShardMap(&ctx, req, &resp).ok());
  }
  maps_->Set(map_);
  const auto before = client_->stats();
  std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  std::vector<float> out(20);
  ASSERT_TRUE(client_->Pull("emb", keys, absl::MakeSpan(out)).ok());
  EXPECT_EQ(client_->shard_map_version(), 6u);
  EXPECT_GT(client_->stats().map_refreshes, before.map_refreshes);
  EXPECT_GT(client_->stats().retries, before.retries) << "the first attempt was refused as stale";
}

TEST_F(ShardedTest, ResentPushIsAppliedOncePerShard) {
  Partitioner part({0, 1, 2});
  for (int shard = 0; shard < 3; ++shard) {
    uint64_t key = 1;
    while (part.ShardIdForKey(key) != static_cast<uint32_t>(shard)) ++key;
    tessera::v1::PushRequest req;
    req.set_table("emb");
    req.add_keys(key);
    const float g[2] = {1.0f, 1.0f};
    req.set_gradients(std::string(reinterpret_cast<const char*>(g), sizeof(g)));
    req.set_worker_id(99);
    req.set_sequence(7);
    req.set_shard_map_version(5);
    auto stub = Stub(shard);
    for (int attempt = 0; attempt < 3; ++attempt) {
      grpc::ClientContext ctx;
      tessera::v1::PushResponse resp;
      ASSERT_TRUE(stub->Push(&ctx, req, &resp).ok());
      EXPECT_EQ(resp.duplicate(), attempt > 0) << "shard " << shard << " attempt " << attempt;
    }
    std::vector<uint64_t> k = {key};
    std::vector<float> w(2);
    ASSERT_TRUE(client_->Pull("emb", k, absl::MakeSpan(w)).ok());
    EXPECT_EQ(w[0], -1.0f) << "counted once on shard " << shard;
  }
}

TEST_F(ShardedTest, EveryShardRefusesBadInputPrecisely) {
  Partitioner part({0, 1, 2});
  for (int shard = 0; shard < 3; ++shard) {
    uint64_t key = 1;
    while (part.ShardIdForKey(key) != static_cast<uint32_t>(shard)) ++key;
    auto stub = Stub(shard);
    auto push = [&](std::vector<uint64_t> keys, std::vector<float> g, const std::string& table = "emb") {
      tessera::v1::PushRequest req;
      req.set_table(table);
      for (auto k : keys) req.add_keys(k);
      req.set_gradients(std::string(reinterpret_cast<const char*>(g.data()), g.size() * 4));
      grpc::ClientContext ctx;
      tessera::v1::PushResponse resp;
      return stub->Push(&ctx, req, &resp);
    };
    grpc::Status s = push({key}, {1.0f, NAN});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("is NaN"));
    s = push({key}, {1.0f, 2.0f, 3.0f});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("dim 2"));
    s = push({key}, {1.0f, 2.0f}, "nope");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    s = push({key, key}, {1, 1, 1, 1});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("duplicate key"));
    // A key this shard does not own: refused with the map version in trailing metadata.
    uint64_t foreign = 1;
    while (part.ShardIdForKey(foreign) == static_cast<uint32_t>(shard)) ++foreign;
    tessera::v1::PullRequest pull;
    pull.set_table("emb");
    pull.add_keys(foreign);
    grpc::ClientContext ctx;
    tessera::v1::PullResponse resp;
    s = stub->Pull(&ctx, pull, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("not shard ", shard)));
    const auto& md = ctx.GetServerTrailingMetadata();
    auto it = md.find("tessera-shard-map-version");
    ASSERT_NE(it, md.end());
    EXPECT_EQ(std::string(it->second.data(), it->second.size()), "5");
    EXPECT_TRUE(servers_[shard].process->Running());
  }
  // Nothing bad was stored anywhere, and the client still works.
  std::vector<uint64_t> keys = {1, 2, 3, 4, 5, 6};
  std::vector<float> out(12);
  ASSERT_TRUE(client_->Pull("emb", keys, absl::MakeSpan(out)).ok());
  for (float v : out) EXPECT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace tessera
