// Fault-injection suite: real processes killed with SIGKILL mid-job, corrupted checkpoints and
// dropped responses. Each test prints what it measured (recovery seconds, updates rolled back,
// accuracy) and asserts bounds.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/kv_client.h"
#include "common/job_json.h"
#include "common/partition.h"
#include "common/rpc.h"
#include "tessera/v1/parameter.grpc.pb.h"
#include "tests/testing/mini_cluster.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using tessera::v1::JobStatus;
using testing::MiniCluster;
using testing::MiniClusterOptions;

constexpr char kFmnistSoftmax[] = R"({"name": "fmnist", "model": {"type": "softmax", "num_features": 784, "num_classes": 10},
  "data": {"train": "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
           "test": "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", "format": "idx"},
  "optimizer": {"type": "adagrad", "learning_rate": 0.1},
  "training": {"epochs": 3, "batch_size": 128, "lr_decay_per_epoch": 0.5})";

std::string Spec(const std::string& extra = "") { return absl::StrCat(kFmnistSoftmax, extra, "}"); }

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveFashionMnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }

  // Submits `json` and starts `n` workers; returns the job id.
  uint64_t SubmitAndStart(MiniCluster& cluster, const std::string& json, int n,
                          std::vector<std::unique_ptr<Subprocess>>* workers) {
    auto spec = ParseJobSpecJson(json, "job");
    EXPECT_TRUE(spec.ok()) << spec.status();
    auto sub = cluster.client().SubmitJob(*spec);
    EXPECT_TRUE(sub.ok()) << sub.status();
    for (int i = 0; i < n; ++i) {
      auto w = cluster.StartWorker(sub->job_id(), absl::StrCat("w", i));
      EXPECT_TRUE(w.ok());
      workers->push_back(std::move(w).value());
    }
    return sub->job_id();
  }

  static double Accuracy(const JobStatus& j) {
    return j.evaluations().empty() ? 0.0 : j.evaluations(j.evaluations_size() - 1).accuracy();
  }

  // Runs the standard job undisturbed on a fresh cluster; returns its final status.
  JobStatus Undisturbed(const std::string& json) {
    MiniCluster cluster;
    EXPECT_TRUE(cluster.Start().ok());
    std::vector<std::unique_ptr<Subprocess>> workers;
    const uint64_t id = SubmitAndStart(cluster, json, 2, &workers);
    auto job = cluster.WaitForJobEnd(id, absl::Seconds(120));
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : JobStatus();
  }
};

TEST_F(FaultTest, KilledWorkerCostsSecondsNotTheJob) {
  const JobStatus baseline = Undisturbed(Spec());
  ASSERT_EQ(baseline.state(), tessera::v1::SUCCEEDED);

  MiniCluster cluster;  // lease timeout 3 s
  ASSERT_TRUE(cluster.Start().ok());
  std::vector<std::unique_ptr<Subprocess>> workers;
  const uint64_t id = SubmitAndStart(cluster, Spec(), 2, &workers);
  ASSERT_TRUE(cluster.WaitForJob(id, absl::Seconds(60), [](const JobStatus& j) {
                       return j.examples_done() >= 40000;
                     }).ok());
  workers[1]->Signal(SIGKILL);
  const absl::Time killed = absl::Now();
  auto taken = cluster.WaitForJob(id, absl::Seconds(30), [](const JobStatus& j) {
    return j.leases_expired() >= 1 || j.state() == tessera::v1::SUCCEEDED;
  });
  ASSERT_TRUE(taken.ok()) << taken.status();
  const double recovery = absl::ToDoubleSeconds(absl::Now() - killed);
  auto job = cluster.WaitForJobEnd(id, absl::Seconds(120));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), tessera::v1::SUCCEEDED) << job->message();
  EXPECT_EQ(workers[0]->Wait(absl::Seconds(10)).value_or(-1), 0) << "the surviving worker finished the job";
  std::printf("kill -9 worker: chunk handed over after %.1f s (lease timeout 3 s); %u lease(s) expired; "
              "test accuracy %.4f vs %.4f undisturbed\n",
              recovery, job->leases_expired(), Accuracy(*job), Accuracy(baseline));
  EXPECT_GE(job->leases_expired(), 1u) << "the dead worker's chunk went back to the queue";
  EXPECT_LT(recovery, 6.0);
  EXPECT_NEAR(Accuracy(*job), Accuracy(baseline), 0.005) << "within 0.5 points of an undisturbed run";
}

TEST_F(FaultTest, KilledServerRestoresItsCheckpointAndTheJobFinishes) {
  MiniCluster cluster;  // heartbeat timeout 1 s
  ASSERT_TRUE(cluster.Start().ok());
  std::vector<std::unique_ptr<Subprocess>> workers;
  const uint64_t id = SubmitAndStart(cluster, Spec(R"(, "checkpoint": {"every_seconds": 1})"), 2, &workers);
  auto ready = cluster.WaitForJob(id, absl::Seconds(60), [](const JobStatus& j) {
    bool complete = false;
    for (const auto& c : j.checkpoints()) complete |= c.complete();
    return complete && j.examples_done() >= 60000;
  });
  ASSERT_TRUE(ready.ok()) << ready.status();
  // Kill half-way between two checkpoints (one per second), so updates are surely lost.
  const uint64_t last = ready->checkpoints(ready->checkpoints_size() - 1).checkpoint_id();
  ASSERT_TRUE(cluster.WaitForJob(id, absl::Seconds(10), [&](const JobStatus& j) {
                       return j.checkpoints(j.checkpoints_size() - 1).checkpoint_id() > last;
                     }).ok());
  absl::SleepFor(absl::Milliseconds(500));
  cluster.server(1).process->Signal(SIGKILL);
  cluster.server(1).process->Wait(absl::Seconds(5));
  const absl::Time killed = absl::Now();
  // The coordinator notices, and the workers wait (retrying) instead of failing.
  auto dead = cluster.WaitForStatus(absl::Seconds(5), [&](const tessera::v1::ClusterStatusResponse& st) {
    for (const auto& s : st.servers()) {
      if (!s.alive()) return true;
    }
    return false;
  });
  ASSERT_TRUE(dead.ok()) << dead.status();
  absl::SleepFor(absl::Seconds(1));
  auto at_restart = cluster.client().GetJob(id);
  ASSERT_TRUE(at_restart.ok());
  const uint64_t examples_before = at_restart->examples_done();
  ASSERT_TRUE(cluster.RestartServer(1).ok());
  const absl::Time restarted = absl::Now();
  auto resumed = cluster.WaitForJob(id, absl::Seconds(60), [&](const JobStatus& j) {
    return j.examples_done() > examples_before + 5000 || j.state() == tessera::v1::SUCCEEDED;
  });
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  const double recovery = absl::ToDoubleSeconds(absl::Now() - restarted);
  auto job = cluster.WaitForJobEnd(id, absl::Seconds(120));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), tessera::v1::SUCCEEDED) << job->message();
  for (auto& w : workers) EXPECT_EQ(w->Wait(absl::Seconds(10)).value_or(-1), 0) << "no worker crashed";
  std::printf("kill -9 server: down %.1f s, training resumed %.1f s after the restart; %u restart(s), "
              "%lu updates rolled back to the last checkpoint; test accuracy %.4f\n",
              absl::ToDoubleSeconds(restarted - killed), recovery, job->server_restarts(),
              static_cast<unsigned long>(job->updates_rolled_back()), Accuracy(*job));
  EXPECT_EQ(job->server_restarts(), 1u);
  EXPECT_GT(job->updates_rolled_back(), 0u) << "pushes after the last checkpoint were lost and counted";
  EXPECT_THAT(cluster.server(1).Log(), HasSubstr("restored checkpoint"));
  EXPECT_GT(Accuracy(*job), 0.80);
  EXPECT_LT(recovery, 20.0);
}

TEST_F(FaultTest, KilledCoordinatorRestartsAndTheJobContinues) {
  MiniCluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  std::vector<std::unique_ptr<Subprocess>> workers;
  const uint64_t id = SubmitAndStart(cluster, Spec(), 2, &workers);
  ASSERT_TRUE(cluster.WaitForJob(id, absl::Seconds(60), [](const JobStatus& j) {
                       return j.examples_done() >= 30000;
                     }).ok());
  cluster.KillCoordinator(SIGKILL);
  const absl::Time killed = absl::Now();
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(cluster.RestartCoordinator().ok());
  const double down = absl::ToDoubleSeconds(absl::Now() - killed);
  auto job = cluster.WaitForJobEnd(id, absl::Seconds(120));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), tessera::v1::SUCCEEDED) << job->message();
  for (auto& w : workers) EXPECT_EQ(w->Wait(absl::Seconds(10)).value_or(-1), 0);
  std::printf("kill -9 coordinator: down %.1f s; job finished with test accuracy %.4f, %u lease(s) re-run\n", down,
              Accuracy(*job), job->leases_expired());
  EXPECT_GT(Accuracy(*job), 0.80);
}

// Values of `keys` in table `table` as the cluster serves them now.
std::vector<float> PullAll(MiniCluster& cluster, const std::string& table, const std::vector<uint64_t>& keys) {
  auto kv = client::KvClient::Create(cluster.client().ShardMaps());
  EXPECT_TRUE(kv.ok());
  std::vector<float> out(keys.size());
  EXPECT_TRUE((*kv)->Pull(table, keys, absl::MakeSpan(out)).ok());
  return out;
}

TEST_F(FaultTest, CorruptCheckpointIsRefusedAndThePreviousOneIsUsed) {
  MiniCluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  auto train = testing::WriteFashionMnistLibsvm(cluster.root(), "t.libsvm", true, 200, 6);
  ASSERT_TRUE(train.ok());
  auto spec = ParseJobSpecJson(absl::StrCat(R"({"model": {"type": "logistic"}, "data": {"train": ")", *train,
                                            R"("}, "optimizer": {"type": "sgd", "learning_rate": 1}})"),
                               "job");
  ASSERT_TRUE(spec.ok());
  auto sub = cluster.client().SubmitJob(*spec);
  ASSERT_TRUE(sub.ok()) << sub.status();
  const std::string table = absl::StrCat("job-", sub->job_id(), "/params");
  std::vector<uint64_t> keys;
  for (uint64_t k = 1; k <= 500; ++k) keys.push_back(k);
  auto kv = client::KvClient::Create(cluster.client().ShardMaps());
  ASSERT_TRUE(kv.ok());
  std::vector<float> ones(keys.size(), 1.0f);
  ASSERT_TRUE((*kv)->Push(table, keys, ones).ok());
  auto r = cluster.Cli({"checkpoint", absl::StrCat("--job=", sub->job_id())});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<float> at_checkpoint1 = PullAll(cluster, table, keys);
  ASSERT_TRUE((*kv)->Push(table, keys, ones).ok());
  r = cluster.Cli({"checkpoint", absl::StrCat("--job=", sub->job_id())});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE((*kv)->Push(table, keys, ones).ok());
  const std::vector<float> now = PullAll(cluster, table, keys);

  // Damage server 0's part of checkpoint 2: one byte in the middle of its table file.
  std::string victim;
  for (const auto& e : std::filesystem::recursive_directory_iterator(cluster.root() + "/server-0-data")) {
    if (e.path().extension() == ".tbl" && e.path().string().find("ckpt-2") != std::string::npos) victim = e.path();
  }
  ASSERT_FALSE(victim.empty());
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(victim) / 2));
    f.put('\x5a');
  }
  r = cluster.Cli({"restore", absl::StrCat("--job=", sub->job_id()), "--checkpoint=2"});
  std::printf("restore of the damaged checkpoint: %s", r.output.c_str());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("is damaged; nothing was changed"));
  EXPECT_THAT(r.output, HasSubstr("CRC mismatch"));
  EXPECT_EQ(PullAll(cluster, table, keys), now) << "neither shard changed";

  // A restart of server 0 wants the latest complete checkpoint (2), finds it damaged and falls
  // back to checkpoint 1.
  cluster.server(0).process->Signal(SIGKILL);
  cluster.server(0).process->Wait(absl::Seconds(5));
  ASSERT_TRUE(cluster.RestartServer(0).ok());
  EXPECT_THAT(cluster.server(0).Log(), HasSubstr("using the previous complete checkpoint 1"));
  const std::vector<float> after = PullAll(cluster, table, keys);
  Partitioner part({0, 1});
  size_t on_shard0 = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (part.ShardIdForKey(keys[i]) == 0) {
      ++on_shard0;
      EXPECT_EQ(after[i], at_checkpoint1[i]) << "key " << keys[i] << " is back at checkpoint 1";
    } else {
      EXPECT_EQ(after[i], now[i]) << "key " << keys[i] << " on the other shard is untouched";
    }
  }
  EXPECT_GT(on_shard0, 100u);
  // An explicit restore of the good checkpoint works.
  r = cluster.Cli({"restore", absl::StrCat("--job=", sub->job_id()), "--checkpoint=1"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(PullAll(cluster, table, keys), at_checkpoint1);
}

TEST(ExactlyOnceTest, DroppedResponsesAreRetriedAndAppliedOnce) {
  testing::TempDir dir;
  auto server = testing::StartServer(dir.path(), "s", {"--faults=server.push.after_apply=drop_response@0.3"});
  ASSERT_TRUE(server.ok()) << server.status();
  client::KvClientOptions o;
  o.initial_backoff = absl::Milliseconds(5);
  auto kv = client::KvClient::Connect({server->address}, o);
  ASSERT_TRUE(kv.ok());
  tessera::v1::TableSpec spec;
  spec.set_name("t");
  spec.set_kind(tessera::v1::TableSpec::DENSE);
  spec.set_size(4);
  spec.mutable_optimizer()->set_type("sgd");
  spec.mutable_optimizer()->set_learning_rate(1.0f);
  ASSERT_TRUE((*kv)->CreateTable(spec).ok());
  std::vector<float> g(4, 1.0f);
  constexpr int kPushes = 300;
  for (int i = 0; i < kPushes; ++i) ASSERT_TRUE((*kv)->PushDense("t", 0, g).ok());
  std::vector<float> w(4);
  ASSERT_TRUE((*kv)->PullDense("t", 0, absl::MakeSpan(w)).ok());
  const auto stats = (*kv)->stats();
  std::printf("%d pushes with 30%% of responses dropped: %lu retries, %lu recognized as already applied; w = %.0f\n",
              kPushes, static_cast<unsigned long>(stats.retries), static_cast<unsigned long>(stats.duplicate_pushes),
              w[0]);
  EXPECT_GT(stats.duplicate_pushes, 30u);
  for (float v : w) EXPECT_EQ(v, -static_cast<float>(kPushes)) << "every push applied exactly once";
}

TEST(ExactlyOnceTest, LostResponseIsAppliedOnceAcrossAServerRestart) {
  testing::TempDir dir;
  auto first = testing::StartServer(dir.path(), "s", {"--faults=server.push.after_apply=drop_response#1"});
  ASSERT_TRUE(first.ok()) << first.status();
  const int port = first->port;
  client::KvClientOptions o;
  o.initial_backoff = absl::Seconds(3);  // time for the checkpoint and restart below
  o.max_backoff = absl::Seconds(3);
  auto kv = client::KvClient::Connect({first->address}, o);
  ASSERT_TRUE(kv.ok());
  tessera::v1::TableSpec spec;
  spec.set_name("t");
  spec.set_kind(tessera::v1::TableSpec::SPARSE);
  spec.set_dim(1);
  spec.mutable_optimizer()->set_type("sgd");
  spec.mutable_optimizer()->set_learning_rate(1.0f);
  ASSERT_TRUE((*kv)->CreateTable(spec).ok());
  std::vector<uint64_t> key = {42};
  std::vector<float> g = {1.0f};
  auto push = (*kv)->PushAsync("t", key, g);

  // The push is applied but its response is lost; checkpoint that state, then kill the server.
  auto stub = tessera::v1::ParameterService::NewStub(CreateChannel(first->address));
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext ctx;
    tessera::v1::ServerStatusResponse st;
    ASSERT_TRUE(stub->ServerStatus(&ctx, tessera::v1::ServerStatusRequest(), &st).ok());
    if (st.pushes() == 1) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  {
    grpc::ClientContext ctx;
    tessera::v1::SaveCheckpointRequest req;
    req.set_checkpoint_id(1);
    tessera::v1::SaveCheckpointResponse resp;
    ASSERT_TRUE(stub->SaveCheckpoint(&ctx, req, &resp).ok());
  }
  first->process->Signal(SIGKILL);
  first->process->Wait(absl::Seconds(5));
  auto second = testing::StartServer(dir.path(), "s", {absl::StrCat("--port=", port)});
  ASSERT_TRUE(second.ok()) << second.status();
  {
    auto stub2 = tessera::v1::ParameterService::NewStub(CreateChannel(second->address));
    grpc::ClientContext ctx;
    tessera::v1::LoadCheckpointRequest req;
    req.set_checkpoint_id(1);
    tessera::v1::LoadCheckpointResponse resp;
    ASSERT_TRUE(stub2->LoadCheckpoint(&ctx, req, &resp).ok());
  }
  ASSERT_FALSE(push.Ready()) << "the client is still retrying";
  ASSERT_TRUE(push.Wait().ok());
  std::vector<float> w(1);
  ASSERT_TRUE((*kv)->Pull("t", key, absl::MakeSpan(w)).ok());
  EXPECT_EQ(w[0], -1.0f) << "applied once, not twice";
  EXPECT_EQ((*kv)->stats().duplicate_pushes, 1u) << "the restarted server recognized the retry";
}

}  // namespace
}  // namespace tessera
