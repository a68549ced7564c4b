// Coordinator and operations, on real processes: membership and the shard map through the CLI,
// kill -9 and restart of the coordinator, servers shown dead and alive again, data leases handed
// to another worker, invalid job specs refused, Prometheus metrics over HTTP.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/kv_client.h"
#include "common/job_json.h"
#include "tests/testing/mini_cluster.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using tessera::v1::AcquireLeaseResponse;
using tessera::v1::ClusterStatusResponse;
using tessera::v1::JobStatus;
using testing::MiniCluster;
using testing::MiniClusterOptions;

// A small libsvm training file (binary labels) written into `dir`.
std::string SmallLibsvm(const std::string& dir, int lines) {
  std::string text;
  for (int i = 0; i < lines; ++i) {
    absl::StrAppend(&text, i % 2, " ", 1 + i % 7, ":1 ", 10 + i % 5, ":0.5\n");
  }
  const std::string path = dir + "/small.libsvm";
  std::ofstream(path) << text;
  return path;
}

std::string LogisticSpec(const std::string& train, const std::string& extra_training = "") {
  return absl::StrCat(R"({"name": "lr", "model": {"type": "logistic"},
    "data": {"train": ")", train, R"(", "format": "libsvm", "chunk_bytes": 200},
    "optimizer": {"type": "sgd", "learning_rate": 0.1},
    "training": {"epochs": 1, "batch_size": 4)", extra_training, "}}");
}

TEST(ClusterTest, StatusListsServersAndShardMapAndSubmittedJobs) {
  MiniCluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  auto r = cluster.Cli({"status", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ClusterStatusResponse st;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.output, &st).ok()) << r.output;
  ASSERT_EQ(st.servers_size(), 2);
  for (const auto& s : st.servers()) {
    EXPECT_TRUE(s.alive()) << s.ShortDebugString();
    EXPECT_TRUE(s.in_map());
  }
  ASSERT_EQ(st.shard_map().shards_size(), 2);
  EXPECT_GE(st.shard_map().version(), 2u);
  EXPECT_NE(st.shard_map().shards(0).address(), st.shard_map().shards(1).address());

  const std::string spec = testing::WriteJobSpec(cluster.root(), "job.json", LogisticSpec(SmallLibsvm(cluster.root(), 100)));
  r = cluster.Cli({"submit", spec});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  uint64_t id = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(r.output), &id)) << r.output;
  {
    auto kv = client::KvClient::Create(cluster.client().ShardMaps());
    ASSERT_TRUE(kv.ok());
    for (const auto& s : (*kv)->ServerStatus()) {
      ASSERT_TRUE(s.ok());
      ASSERT_EQ(s->tables_size(), 1) << "submitting created the job's table on every server";
      EXPECT_EQ(s->tables(0).name(), absl::StrCat("job-", id, "/params"));
    }
  }
  r = cluster.Cli({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("PENDING"));
  EXPECT_THAT(r.output, HasSubstr("alive"));
  r = cluster.Cli({"jobs"});
  EXPECT_THAT(r.output, HasSubstr("lr"));
  r = cluster.Cli({"cancel", absl::StrCat(id)});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("CANCELLED"));
  // Cancelling freed the job's tables on both servers.
  auto kv = client::KvClient::Create(cluster.client().ShardMaps());
  ASSERT_TRUE(kv.ok());
  for (const auto& s : (*kv)->ServerStatus()) {
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->tables_size(), 0);
  }
}

TEST(ClusterTest, CoordinatorSurvivesKill9WithServersMapAndJobs) {
  MiniCluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  const std::string spec = testing::WriteJobSpec(cluster.root(), "job.json", LogisticSpec(SmallLibsvm(cluster.root(), 100)));
  auto r = cluster.Cli({"submit", spec});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto before = cluster.client().ClusterStatus();
  ASSERT_TRUE(before.ok());
  const pid_t server0 = cluster.server(0).process->pid();

  cluster.KillCoordinator(SIGKILL);
  ASSERT_TRUE(cluster.RestartCoordinator().ok());
  // Servers re-attach by heartbeating, without a restart of their own.
  auto after = cluster.WaitForStatus(absl::Seconds(10), [](const ClusterStatusResponse& st) {
    int alive = 0;
    for (const auto& s : st.servers()) {
      if (s.alive() && s.last_heartbeat_unix_ms() > 0 && s.status().server_id() != "") ++alive;
    }
    return alive == 2;
  });
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->shard_map().version(), before->shard_map().version());
  ASSERT_EQ(after->shard_map().shards_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(after->shard_map().shards(i).address(), before->shard_map().shards(i).address());
    EXPECT_EQ(after->shard_map().shards(i).shard_id(), before->shard_map().shards(i).shard_id());
  }
  ASSERT_EQ(after->jobs_size(), 1);
  EXPECT_EQ(after->jobs(0).name(), "lr");
  EXPECT_EQ(after->jobs(0).state(), tessera::v1::PENDING);
  EXPECT_EQ(cluster.server(0).process->pid(), server0);
  EXPECT_TRUE(cluster.server(0).process->Running());
  // The restarted coordinator keeps handing out job ids after the old ones.
  r = cluster.Cli({"submit", spec});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(absl::StripAsciiWhitespace(r.output), "2");
}

TEST(ClusterTest, StoppedServerIsShownDeadThenAliveAgain) {
  MiniCluster cluster;  // heartbeat timeout 1 s
  ASSERT_TRUE(cluster.Start().ok());
  const std::string stopped_address = cluster.server(1).address;
  cluster.server(1).process->Signal(SIGSTOP);
  auto dead = cluster.WaitForStatus(absl::Seconds(5), [&](const ClusterStatusResponse& st) {
    for (const auto& s : st.servers()) {
      if (s.address() == stopped_address) return !s.alive();
    }
    return false;
  });
  ASSERT_TRUE(dead.ok()) << dead.status();
  for (const auto& s : dead->shard_map().shards()) {
    if (s.address() == stopped_address) {
      EXPECT_FALSE(s.alive()) << "the shard map shows it dead too";
    }
  }
  auto r = cluster.Cli({"status"});
  EXPECT_THAT(r.output, HasSubstr("DEAD"));
  cluster.server(1).process->Signal(SIGCONT);
  auto alive = cluster.WaitForStatus(absl::Seconds(5), [](const ClusterStatusResponse& st) {
    for (const auto& s : st.servers()) {
      if (!s.alive()) return false;
    }
    return true;
  });
  ASSERT_TRUE(alive.ok()) << alive.status();
}

TEST(ClusterTest, UnrenewedLeaseGoesToAnotherWorker) {
  MiniCluster cluster;  // lease timeout 3 s
  ASSERT_TRUE(cluster.Start().ok());
  const std::string spec = testing::WriteJobSpec(cluster.root(), "job.json", LogisticSpec(SmallLibsvm(cluster.root(), 100)));
  auto job = ReadJobSpecFile(spec);
  ASSERT_TRUE(job.ok());
  auto sub = cluster.client().SubmitJob(*job);
  ASSERT_TRUE(sub.ok()) << sub.status();
  const uint64_t id = sub->job_id();
  // Two fake workers speaking the protocol directly.
  auto a = cluster.client().RegisterWorker(id, "fake-a");
  auto b = cluster.client().RegisterWorker(id, "fake-b");
  ASSERT_TRUE(a.ok() && b.ok());
  auto la = cluster.client().AcquireLease(id, a->worker_id());
  ASSERT_TRUE(la.ok());
  ASSERT_EQ(la->kind(), AcquireLeaseResponse::TRAIN);
  const uint32_t chunk = la->chunk().index();
  // b takes other chunks until none is left but a's.
  std::set<uint32_t> seen_by_b;
  for (;;) {
    auto lb = cluster.client().AcquireLease(id, b->worker_id());
    ASSERT_TRUE(lb.ok());
    if (lb->kind() != AcquireLeaseResponse::TRAIN) {
      EXPECT_EQ(lb->kind(), AcquireLeaseResponse::WAIT) << "a's chunk is still leased";
      break;
    }
    EXPECT_NE(lb->chunk().index(), chunk);
    seen_by_b.insert(lb->chunk().index());
    tessera::v1::CompleteLeaseRequest done;
    done.set_job_id(id);
    done.set_worker_id(b->worker_id());
    done.set_lease_id(lb->lease_id());
    ASSERT_TRUE(cluster.client().CompleteLease(done).ok());
  }
  ASSERT_FALSE(seen_by_b.empty());
  // a never renews: after the lease timeout its chunk goes to b.
  absl::StatusOr<AcquireLeaseResponse> taken = absl::UnknownError("");
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    absl::SleepFor(absl::Milliseconds(200));
    taken = cluster.client().AcquireLease(id, b->worker_id());
    ASSERT_TRUE(taken.ok());
  } while (taken->kind() != AcquireLeaseResponse::TRAIN && absl::Now() < deadline);
  ASSERT_EQ(taken->kind(), AcquireLeaseResponse::TRAIN);
  EXPECT_EQ(taken->chunk().index(), chunk);
  tessera::v1::RenewLeaseRequest renew;
  renew.set_job_id(id);
  renew.set_worker_id(a->worker_id());
  renew.set_lease_id(la->lease_id());
  auto lost = cluster.client().RenewLease(renew);
  ASSERT_TRUE(lost.ok());
  EXPECT_EQ(lost->result(), tessera::v1::RenewLeaseResponse::LEASE_LOST);
  auto st = cluster.client().GetJob(id);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->leases_expired(), 1u);
}

TEST(ClusterTest, InvalidJobSpecsAreRefusedWithOneLineAndCreateNothing) {
  MiniCluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  const std::string train = SmallLibsvm(cluster.root(), 20);
  struct Case {
    std::string name, json, needle;
  };
  const std::vector<Case> cases = {
      {"unknown-model", absl::StrReplaceAll(LogisticSpec(train), {{"\"logistic\"", "\"svm\""}}), "model.type = 'svm'"},
      {"missing-data", LogisticSpec(cluster.root() + "/nope.libsvm"), "nope.libsvm"},
      {"negative-lr", absl::StrReplaceAll(LogisticSpec(train), {{"0.1}", "-0.1}"}}), "learning_rate = -0.1"},
      {"malformed-json", "{\"name\": \"x\", \"model\": {", "not a valid job spec"},
      {"unknown-field", absl::StrReplaceAll(LogisticSpec(train), {{"\"epochs\"", "\"epoch\""}}), "epoch"},
      {"bad-consistency", LogisticSpec(train, ", \"consistency\": \"eventual\""), "training.consistency = 'eventual'"},
  };
  for (const auto& c : cases) {
    const std::string path = testing::WriteJobSpec(cluster.root(), c.name + ".json", c.json);
    auto r = cluster.Cli({"submit", path});
    EXPECT_NE(r.exit_code, 0) << c.name;
    EXPECT_THAT(r.output, HasSubstr(c.needle)) << c.name;
    const std::string text(absl::StripAsciiWhitespace(r.output));
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 0) << c.name << ": one line, got:\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("tessera: ")) << c.name;
  }
  auto jobs = cluster.client().ListJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->jobs_size(), 0) << "nothing half-created";
  auto kv = client::KvClient::Create(cluster.client().ShardMaps());
  ASSERT_TRUE(kv.ok());
  for (const auto& s : (*kv)->ServerStatus()) {
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->tables_size(), 0) << "no tables left behind";
  }
}

TEST(ClusterTest, UnreachableCoordinatorIsOneClearLine) {
  testing::TempDir dir;
  auto r = testing::RunCommand(testing::BinaryPath("tessera"), {"status", "--coordinator=127.0.0.1:1"},
                               dir.Sub("out"), absl::Seconds(20));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(absl::StripAsciiWhitespace(r.output), "tessera: cannot reach the coordinator at 127.0.0.1:1 (connection refused)");
}

TEST(ClusterTest, EveryDaemonServesPrometheusMetrics) {
  MiniClusterOptions o;
  o.metrics = true;
  MiniCluster cluster(o);
  ASSERT_TRUE(cluster.Start().ok());
  const std::string spec = testing::WriteJobSpec(cluster.root(), "job.json", LogisticSpec(SmallLibsvm(cluster.root(), 200)));
  auto r = cluster.Cli({"submit", spec});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto w = cluster.StartWorker(1, "w0");
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(cluster.WaitForJobEnd(1, absl::Seconds(30)).ok());
  auto curl = [&](int port) {
    return testing::RunCommand("/usr/bin/curl", {"-sS", absl::StrCat("http://127.0.0.1:", port, "/metrics")},
                               cluster.root() + "/curl.out", absl::Seconds(10));
  };
  auto c = curl(cluster.coordinator_metrics_port());
  ASSERT_EQ(c.exit_code, 0) << c.output;
  for (const char* m : {"# TYPE tessera_rpc_requests_total counter", "tessera_rpc_latency_seconds_bucket",
                        "tessera_cluster_servers{state=\"alive\"} 2", "tessera_job_examples_done",
                        "tessera_leases_total", "method=\"AcquireLease\""}) {
    EXPECT_THAT(c.output, HasSubstr(m));
  }
  for (int i = 0; i < 2; ++i) {
    auto s = curl(cluster.server_metrics_port(i));
    ASSERT_EQ(s.exit_code, 0) << s.output;
    for (const char* m : {"tessera_rpc_requests_total", "method=\"Push\"", "tessera_rpc_latency_seconds_count",
                          "tessera_table_rows{table=\"job-1/params\"}", "tessera_table_bytes", "tessera_resident_bytes",
                          "tessera_shard_operations_total{op=\"push\"}"}) {
      EXPECT_THAT(s.output, HasSubstr(m)) << "server " << i;
    }
  }
}

}  // namespace
}  // namespace tessera
