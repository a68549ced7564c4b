// A small multi-host cluster on one machine: the coordinator, two servers and two workers each in
// their own network namespace ("host") with their own address, joined by veth pairs to a bridge
// that lives in a namespace of its own — the machine's own network is never touched. A job trains
// to completion while one server's link goes down for a few seconds; status shows the outage.
// Needs root and `ip netns`; skipped with a message otherwise.
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "tests/testing/mini_cluster.h"

namespace tessera {
namespace {

using tessera::v1::ClusterStatusResponse;
using tessera::v1::JobStatus;

constexpr char kIp[] = "/usr/sbin/ip";

class NetnsCluster {
 public:
  NetnsCluster() : id_(getpid() % 10000), subnet_(absl::StrCat("10.199.", getpid() % 250, ".")) {}
  ~NetnsCluster() {
    for (auto it = processes_.rbegin(); it != processes_.rend(); ++it) (*it)->Stop(absl::Seconds(5));
    for (const auto& ns : namespaces_) Run({"netns", "del", ns});
  }

  // Runs `ip args...`; returns true on success.
  bool Run(std::vector<std::string> args) {
    auto r = testing::RunCommand(kIp, std::move(args), dir_.Sub("ip.out"), absl::Seconds(20));
    if (r.exit_code != 0) last_error_ = r.output;
    return r.exit_code == 0;
  }

  // Probes whether network namespaces can be made here.
  bool Supported(std::string* why) {
    if (geteuid() != 0) {
      *why = "not root";
      return false;
    }
    const std::string probe = absl::StrCat("tsp", id_);
    if (!Run({"netns", "add", probe})) {
      *why = absl::StrCat("`ip netns add` failed: ", last_error_);
      return false;
    }
    Run({"netns", "del", probe});
    return true;
  }

  std::string Ns(const std::string& host) { return absl::StrCat("ts", id_, host); }
  std::string Address(int host) { return absl::StrCat(subnet_, host); }
  std::string BridgePort(const std::string& host) { return absl::StrCat("b", id_, host); }

  ::testing::AssertionResult Build(const std::vector<std::pair<std::string, int>>& hosts) {
    const std::string br = Ns("br");
    if (!Run({"netns", "add", br})) return ::testing::AssertionFailure() << last_error_;
    namespaces_.push_back(br);
    if (!Run({"-n", br, "link", "add", "br0", "type", "bridge"}) || !Run({"-n", br, "link", "set", "br0", "up"})) {
      return ::testing::AssertionFailure() << last_error_;
    }
    for (const auto& [host, octet] : hosts) {
      const std::string ns = Ns(host), h = absl::StrCat("h", id_, host), b = BridgePort(host);
      if (!Run({"netns", "add", ns})) return ::testing::AssertionFailure() << last_error_;
      namespaces_.push_back(ns);
      const std::vector<std::vector<std::string>> steps = {
          {"link", "add", h, "type", "veth", "peer", "name", b},
          {"link", "set", h, "netns", ns},
          {"link", "set", b, "netns", br},
          {"-n", ns, "addr", "add", absl::StrCat(Address(octet), "/24"), "dev", h},
          {"-n", ns, "link", "set", h, "up"},
          {"-n", ns, "link", "set", "lo", "up"},
          {"-n", br, "link", "set", b, "master", "br0"},
          {"-n", br, "link", "set", b, "up"},
      };
      for (const auto& step : steps) {
        if (!Run(step)) return ::testing::AssertionFailure() << absl::StrJoin(step, " ") << ": " << last_error_;
      }
    }
    return ::testing::AssertionSuccess();
  }

  // Starts `binary` inside `host`'s namespace.
  Subprocess* Start(const std::string& host, const std::string& binary, std::vector<std::string> args,
                    const std::string& log) {
    SubprocessOptions o;
    o.binary = kIp;
    o.args = {"netns", "exec", Ns(host), testing::BinaryPath(binary)};
    o.args.insert(o.args.end(), args.begin(), args.end());
    o.log_file = dir_.Sub(log);
    auto p = Subprocess::Start(o);
    if (!p.ok()) return nullptr;
    processes_.push_back(std::move(p).value());
    return processes_.back().get();
  }

  // Runs the CLI inside the coordinator's namespace.
  testing::CommandResult Cli(std::vector<std::string> args) {
    std::vector<std::string> full = {"netns", "exec", Ns("c"), testing::BinaryPath("tessera")};
    full.insert(full.end(), args.begin(), args.end());
    full.push_back(absl::StrCat("--coordinator=", Address(2), ":7000"));
    return testing::RunCommand(kIp, full, dir_.Sub(absl::StrCat("cli-", cli_++, ".out")), absl::Seconds(30));
  }

  testing::TempDir dir_;

 private:
  const int id_;
  const std::string subnet_;
  std::vector<std::string> namespaces_;
  std::vector<std::unique_ptr<Subprocess>> processes_;
  std::string last_error_;
  int cli_ = 0;
};

absl::StatusOr<ClusterStatusResponse> Status(NetnsCluster& net) {
  auto r = net.Cli({"status", "--json"});
  if (r.exit_code != 0) return absl::UnavailableError(r.output);
  ClusterStatusResponse st;
  if (!google::protobuf::util::JsonStringToMessage(r.output, &st).ok()) return absl::InternalError(r.output);
  return st;
}

TEST(NetnsTest, JobSurvivesAServerLinkOutageAcrossHosts) {
  NetnsCluster net;
  std::string why;
  if (!net.Supported(&why)) GTEST_SKIP() << "multi-host test needs root and network namespaces: " << why;
  if (!testing::HaveFashionMnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  ASSERT_TRUE(net.Build({{"c", 2}, {"s0", 11}, {"s1", 12}, {"w0", 21}, {"w1", 22}}));

  const std::string c = net.Address(2);
  ASSERT_NE(net.Start("c", "tessera-coordinator",
                      {absl::StrCat("--host=", c), "--port=7000", absl::StrCat("--port_file=", net.dir_.Sub("c.port")),
                       absl::StrCat("--state_dir=", net.dir_.Sub("c-state")), "--heartbeat_interval=200ms",
                       "--heartbeat_timeout=1s", "--lease_timeout=10s"},
                      "coordinator.log"),
            nullptr);
  for (int i = 0; i < 2; ++i) {
    const std::string host = absl::StrCat("s", i);
    Subprocess* s = net.Start(host, "tessera-server",
                              {absl::StrCat("--host=", net.Address(11 + i)), "--port=7100",
                               absl::StrCat("--port_file=", net.dir_.Sub(host + ".port")),
                               absl::StrCat("--coordinator=", c, ":7000"),
                               absl::StrCat("--data_dir=", net.dir_.Sub(host + "-data"))},
                              host + ".log");
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(WaitForPortFile(net.dir_.Sub(host + ".port"), absl::Seconds(20), s).ok());
  }
  auto train = testing::WriteFashionMnistLibsvm(net.dir_.path(), "train.libsvm", true, 3000);
  auto test = testing::WriteFashionMnistLibsvm(net.dir_.path(), "test.libsvm", false, 500);
  ASSERT_TRUE(train.ok() && test.ok());
  const std::string spec = testing::WriteJobSpec(net.dir_.path(), "job.json", absl::StrCat(R"({"name": "netns",
    "model": {"type": "softmax", "num_features": 784, "num_classes": 10},
    "data": {"train": ")", *train, R"(", "test": ")", *test, R"(", "chunk_bytes": 400000},
    "optimizer": {"type": "adagrad", "learning_rate": 0.1},
    "training": {"epochs": 8, "batch_size": 32}})"));
  auto r = net.Cli({"submit", spec});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  uint64_t job = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(r.output), &job)) << r.output;
  for (int i = 0; i < 2; ++i) {
    ASSERT_NE(net.Start(absl::StrCat("w", i), "tessera-worker",
                        {absl::StrCat("--coordinator=", c, ":7000"), absl::StrCat("--job=", job),
                         absl::StrCat("--worker_id=w", i), "--batch_delay=15ms"},
                        absl::StrCat("w", i, ".log")),
              nullptr);
  }
  // Let training get going, then cut server 1's link for 3 seconds.
  absl::SleepFor(absl::Seconds(2));
  auto before = Status(net);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->jobs(0).state(), tessera::v1::RUNNING);
  ASSERT_TRUE(net.Run({"-n", net.Ns("br"), "link", "set", net.BridgePort("s1"), "down"}));
  const absl::Time cut = absl::Now();
  bool shown_dead = false;
  while (absl::Now() - cut < absl::Seconds(3)) {
    auto st = Status(net);
    if (st.ok()) {
      for (const auto& s : st->servers()) {
        if (s.address() == absl::StrCat(net.Address(12), ":7100") && !s.alive()) shown_dead = true;
      }
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(net.Run({"-n", net.Ns("br"), "link", "set", net.BridgePort("s1"), "up"}));
  EXPECT_TRUE(shown_dead) << "status showed server 1 dead during the outage";

  JobStatus last;
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (absl::Now() < deadline) {
    auto st = Status(net);
    if (st.ok() && st->jobs_size() == 1) {
      last = st->jobs(0);
      if (last.state() != tessera::v1::RUNNING && last.state() != tessera::v1::PENDING) break;
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
  ASSERT_EQ(last.state(), tessera::v1::SUCCEEDED) << last.ShortDebugString();
  auto after = Status(net);
  ASSERT_TRUE(after.ok());
  for (const auto& s : after->servers()) EXPECT_TRUE(s.alive()) << s.address() << " is back";
  std::printf("netns cluster: server link down 3 s; status showed it dead; job finished with test accuracy %.4f\n",
              last.evaluations().empty() ? 0.0 : last.evaluations(0).accuracy());
  EXPECT_GT(last.evaluations(0).accuracy(), 0.6);
}

}  // namespace
}  // namespace tessera
