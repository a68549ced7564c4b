// The real tessera-server binary on port 0: push and pull against hand computations, every bad
// input of the foundation issue with its precise status (and the server still answering after),
// health and --help.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "client/kv_client.h"
#include "common/rpc.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tessera/v1/parameter.grpc.pb.h"
#include "tests/testing/daemons.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using tessera::v1::TableSpec;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = testing::StartServer(dir_.path(), "server", {"--max_message_mb=4"});
    ASSERT_TRUE(d.ok()) << d.status();
    server_ = std::move(d).value();
    auto c = client::KvClient::Connect({server_.address});
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(c).value();
    stub_ = tessera::v1::ParameterService::NewStub(CreateChannel(server_.address));

    TableSpec emb;
    emb.set_name("emb");
    emb.set_kind(TableSpec::SPARSE);
    emb.set_dim(3);
    emb.mutable_optimizer()->set_type("sgd");
    emb.mutable_optimizer()->set_learning_rate(0.5f);
    emb.mutable_initializer()->set_type("constant");
    emb.mutable_initializer()->set_scale(1.0f);
    ASSERT_TRUE(client_->CreateTable(emb).ok());
    TableSpec w;
    w.set_name("w");
    w.set_kind(TableSpec::DENSE);
    w.set_size(6);
    w.mutable_optimizer()->set_type("sgd");
    w.mutable_optimizer()->set_learning_rate(0.1f);
    ASSERT_TRUE(client_->CreateTable(w).ok());
  }

  // A raw RPC, bypassing the client's normalization, so the server sees exactly this request.
  grpc::Status RawPush(const tessera::v1::PushRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    tessera::v1::PushResponse resp;
    return stub_->Push(&ctx, req, &resp);
  }
  grpc::Status RawPull(const tessera::v1::PullRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    tessera::v1::PullResponse resp;
    return stub_->Pull(&ctx, req, &resp);
  }
  static tessera::v1::PushRequest SparsePush(std::vector<uint64_t> keys, std::vector<float> g) {
    tessera::v1::PushRequest req;
    req.set_table("emb");
    for (auto k : keys) req.add_keys(k);
    req.set_gradients(std::string(reinterpret_cast<const char*>(g.data()), g.size() * 4));
    return req;
  }
  // The server still serves a good request after a bad one.
  void ExpectStillServing() {
    std::vector<uint64_t> keys = {12345};
    std::vector<float> out(3);
    ASSERT_TRUE(client_->Pull("emb", keys, absl::MakeSpan(out)).ok());
    EXPECT_TRUE(server_.process->Running());
  }

  testing::TempDir dir_;
  testing::Daemon server_;
  std::unique_ptr<client::KvClient> client_;
  std::unique_ptr<tessera::v1::ParameterService::Stub> stub_;
};

TEST_F(ServerTest, SparsePushThenPullMatchesHandComputation) {
  // Rows start at 1.0; SGD with lr 0.5: w = 1 - 0.5 * g.
  std::vector<uint64_t> keys = {7, 3, 1000000000000ull};
  std::vector<float> g = {1, 2, 3, -2, 0, 4, 0.5f, 0.5f, 0.5f};
  ASSERT_TRUE(client_->Push("emb", keys, g).ok());
  std::vector<float> out(9);
  ASSERT_TRUE(client_->Pull("emb", keys, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ::testing::ElementsAre(0.5f, 0.0f, -0.5f, 2.0f, 1.0f, -1.0f, 0.75f, 0.75f, 0.75f));
  // Repeated keys in one push add up; the answer comes back in the caller's order.
  std::vector<uint64_t> dup = {3, 3, 7};
  std::vector<float> g2 = {1, 1, 1, 1, 1, 1, 0, 0, 0};
  ASSERT_TRUE(client_->Push("emb", dup, g2).ok());
  std::vector<uint64_t> back = {7, 3};
  std::vector<float> out2(6);
  ASSERT_TRUE(client_->Pull("emb", back, absl::MakeSpan(out2)).ok());
  EXPECT_THAT(out2, ::testing::ElementsAre(0.5f, 0.0f, -0.5f, 1.0f, 0.0f, -2.0f));
}

TEST_F(ServerTest, DensePushPullAndPushPullInOneRoundTrip) {
  std::vector<float> g = {1, 2, 3, 4};
  ASSERT_TRUE(client_->PushDense("w", 1, g).ok());
  std::vector<float> out(6);
  ASSERT_TRUE(client_->PullDense("w", 0, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ::testing::ElementsAre(0.0f, -0.1f, -0.2f, -0.3f, -0.4f, 0.0f));
  std::vector<float> g2 = {10, 10};
  std::vector<float> out2(2);
  ASSERT_TRUE(client_->PushPullDense("w", 4, g2, absl::MakeSpan(out2)).ok());
  EXPECT_THAT(out2, ::testing::ElementsAre(-1.4f, -1.0f));
  // Asynchronous calls complete the same way.
  std::vector<float> out3(6);
  auto f = client_->PullDenseAsync("w", 0, absl::MakeSpan(out3));
  ASSERT_TRUE(f.Wait().ok());
  EXPECT_FLOAT_EQ(out3[5], -1.0f);
}

TEST_F(ServerTest, WrongValueLengthIsInvalidArgument) {
  grpc::Status s = RawPush(SparsePush({1, 2}, {1, 2, 3, 4}));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("gradients hold 4 floats but 2 keys x dim 3 of table 'emb' need 6"));
  ExpectStillServing();
}

TEST_F(ServerTest, UnknownTableIsNotFound) {
  tessera::v1::PullRequest req;
  req.set_table("missing");
  req.add_keys(1);
  grpc::Status s = RawPull(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("table 'missing' does not exist"));
  ExpectStillServing();
}

TEST_F(ServerTest, AveragedPullOfATableWithoutAverageIsFailedPrecondition) {
  tessera::v1::PullRequest req;
  req.set_table("emb");
  req.add_keys(1);
  req.set_averaged(true);
  grpc::Status s = RawPull(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("table 'emb' keeps no weight average"));
  ExpectStillServing();
}

TEST_F(ServerTest, NanOrInfGradientIsRefusedAndNeverReachesAWeight) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    grpc::Status s = RawPush(SparsePush({5}, {0.0f, bad, 0.0f}));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("gradient for key 5 element 1 is"));
  }
  std::vector<uint64_t> keys = {5};
  std::vector<float> out(3);
  ASSERT_TRUE(client_->Pull("emb", keys, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ::testing::Each(1.0f));
  // Through the client too: the whole call fails, nothing is applied.
  std::vector<float> g = {NAN, 0, 0};
  auto st = client_->Push("emb", keys, g);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(client_->Pull("emb", keys, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ::testing::Each(1.0f));
  ExpectStillServing();
}

TEST_F(ServerTest, DuplicateKeysAreInvalidArgument) {
  grpc::Status s = RawPush(SparsePush({9, 9}, {1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("duplicate key 9"));
  ExpectStillServing();
}

TEST_F(ServerTest, EmptyRequestIsInvalidArgument) {
  tessera::v1::PullRequest req;
  req.set_table("emb");
  grpc::Status s = RawPull(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("has no keys"));
  tessera::v1::PullRequest none;
  s = RawPull(none);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("names no table"));
  ExpectStillServing();
}

TEST_F(ServerTest, OversizedMessageIsResourceExhausted) {
  // The server runs with --max_message_mb=4; this push is 8 MiB of gradients.
  std::vector<uint64_t> keys(1 << 19);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = i;
  std::vector<float> g(keys.size() * 3, 0.0f);
  auto req = SparsePush(keys, g);
  grpc::Status s = RawPush(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("larger than max"));
  ExpectStillServing();
}

TEST_F(ServerTest, HealthCheckAnswersServing) {
  auto health = grpc::health::v1::Health::NewStub(CreateChannel(server_.address));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(ServerTest, StatusReportsTablesAndCounters) {
  std::vector<uint64_t> keys = {1, 2};
  std::vector<float> g(6, 1.0f);
  ASSERT_TRUE(client_->Push("emb", keys, g).ok());
  auto st = client_->ServerStatus();
  ASSERT_EQ(st.size(), 1u);
  ASSERT_TRUE(st[0].ok());
  EXPECT_EQ(st[0]->pushes(), 1u);
  EXPECT_EQ(st[0]->keys_pushed(), 2u);
  ASSERT_EQ(st[0]->tables_size(), 2);
  EXPECT_EQ(st[0]->tables(0).name(), "emb");
  EXPECT_EQ(st[0]->tables(0).rows(), 2u);
  EXPECT_EQ(st[0]->tables(1).name(), "w");
  EXPECT_EQ(st[0]->tables(1).range_end(), 6u);
}

TEST_F(ServerTest, SigtermStopsTheServerCleanly) {
  server_.process->Signal(SIGTERM);
  auto code = server_.process->Wait(absl::Seconds(10));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_THAT(server_.Log(), HasSubstr("tessera-server stopped"));
}

TEST(ServerBinaryTest, HelpListsTheFlags) {
  testing::TempDir dir;
  SubprocessOptions opts;
  opts.binary = testing::BinaryPath("tessera-server");
  opts.args = {"--help"};
  opts.log_file = dir.Sub("help.txt");
  auto p = Subprocess::Start(opts);
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->Wait(absl::Seconds(10)).has_value());
  testing::Daemon d;
  d.log_file = opts.log_file;
  const std::string help = d.Log();
  for (const char* flag : {"--port", "--port_file", "--data_dir", "--log_level", "--host", "--max_message_mb"}) {
    EXPECT_THAT(help, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace tessera
