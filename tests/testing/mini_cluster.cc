#include "tests/testing/mini_cluster.h"

#include <signal.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/data/idx.h"
#include "common/data/write.h"

namespace tessera::testing {

using namespace tessera::v1;  // NOLINT

namespace {
constexpr char kFmnist[] = "/usr/share/datasets/fashion-mnist/";

std::string ReadFileText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

MiniCluster::MiniCluster(MiniClusterOptions options) : options_(std::move(options)) {}

MiniCluster::~MiniCluster() {
  client_.reset();
  for (auto& s : servers_) {
    if (s.process) s.process->Stop(absl::Seconds(5));
  }
  if (coordinator_.process) coordinator_.process->Stop(absl::Seconds(5));
}

absl::Status MiniCluster::StartCoordinatorProcess(int port) {
  std::vector<std::string> args = {absl::StrCat("--state_dir=", dir_.Sub("coordinator-state")),
                                   absl::StrCat("--heartbeat_interval=", options_.heartbeat_interval),
                                   absl::StrCat("--heartbeat_timeout=", options_.heartbeat_timeout),
                                   absl::StrCat("--lease_timeout=", options_.lease_timeout), "--log_level=debug"};
  if (options_.metrics) {
    args.push_back("--metrics_port=0");
    args.push_back(absl::StrCat("--metrics_port_file=", dir_.Sub("coordinator.metrics_port")));
  }
  args.insert(args.end(), options_.coordinator_flags.begin(), options_.coordinator_flags.end());
  // StartDaemon passes --port=0 first; a later --port wins, which lets a restart keep its port.
  if (port != 0) args.push_back(absl::StrCat("--port=", port));
  auto d = StartDaemon(BinaryPath("tessera-coordinator"), dir_.path(), "coordinator", args);
  if (!d.ok()) return d.status();
  coordinator_ = std::move(d).value();
  coordinator_port_ = coordinator_.port;
  coordinator_address_ = absl::StrCat("127.0.0.1:", coordinator_port_);
  if (options_.metrics) {
    auto p = WaitForPortFile(dir_.Sub("coordinator.metrics_port"), absl::Seconds(10), coordinator_.process.get());
    if (!p.ok()) return p.status();
    coordinator_metrics_port_ = *p;
  }
  return absl::OkStatus();
}

absl::StatusOr<Daemon> MiniCluster::StartServerProcess(int i, int port) {
  const std::string name = absl::StrCat("server-", i);
  std::vector<std::string> args = {absl::StrCat("--coordinator=", coordinator_address_),
                                   absl::StrCat("--data_dir=", dir_.Sub(name + "-data")), "--log_level=debug"};
  if (options_.metrics) {
    args.push_back("--metrics_port=0");
    args.push_back(absl::StrCat("--metrics_port_file=", dir_.Sub(name + ".metrics_port")));
  }
  args.insert(args.end(), options_.server_flags.begin(), options_.server_flags.end());
  if (port != 0) args.push_back(absl::StrCat("--port=", port));
  auto d = StartDaemon(BinaryPath("tessera-server"), dir_.path(), name, args);
  if (!d.ok()) return d.status();
  if (options_.metrics) {
    auto p = WaitForPortFile(dir_.Sub(name + ".metrics_port"), absl::Seconds(10), d->process.get());
    if (!p.ok()) return p.status();
    if (server_metrics_ports_.size() <= static_cast<size_t>(i)) server_metrics_ports_.resize(i + 1);
    server_metrics_ports_[i] = *p;
  }
  return d;
}

absl::Status MiniCluster::Start() {
  if (auto s = StartCoordinatorProcess(0); !s.ok()) return s;
  client::CoordinatorClientOptions co;
  co.retry_for = absl::Seconds(20);
  co.security = options_.security;
  client_ = std::make_unique<client::CoordinatorClient>(coordinator_address_, co);
  for (int i = 0; i < options_.servers; ++i) {
    auto d = StartServerProcess(i, 0);
    if (!d.ok()) return d.status();
    servers_.push_back(std::move(d).value());
  }
  return absl::OkStatus();
}

absl::Status MiniCluster::RestartCoordinator() {
  if (coordinator_.process && coordinator_.process->Running()) coordinator_.process->Stop();
  return StartCoordinatorProcess(coordinator_port_);
}

void MiniCluster::KillCoordinator(int signal) {
  coordinator_.process->Signal(signal);
  if (signal == SIGKILL) coordinator_.process->Wait(absl::Seconds(10));
}

absl::Status MiniCluster::RestartServer(int i) {
  if (servers_[i].process && servers_[i].process->Running()) servers_[i].process->Stop();
  auto d = StartServerProcess(i, 0);
  if (!d.ok()) return d.status();
  servers_[i] = std::move(d).value();
  return absl::OkStatus();
}

absl::Status MiniCluster::AddServer() {
  auto d = StartServerProcess(static_cast<int>(servers_.size()), 0);
  if (!d.ok()) return d.status();
  servers_.push_back(std::move(d).value());
  return absl::OkStatus();
}

std::string MiniCluster::WorkerLog(const std::string& name) const { return dir_.Sub("worker-" + name + ".log"); }

absl::StatusOr<std::unique_ptr<Subprocess>> MiniCluster::StartWorker(uint64_t job, const std::string& name,
                                                                    std::vector<std::string> flags) {
  SubprocessOptions opts;
  opts.binary = BinaryPath("tessera-worker");
  opts.args = {absl::StrCat("--coordinator=", coordinator_address_), absl::StrCat("--job=", job),
               absl::StrCat("--worker_id=", name), "--log_level=debug"};
  opts.args.insert(opts.args.end(), options_.worker_flags.begin(), options_.worker_flags.end());
  opts.args.insert(opts.args.end(), flags.begin(), flags.end());
  opts.log_file = WorkerLog(name);
  return Subprocess::Start(opts);
}

CommandResult RunCommand(const std::string& binary, std::vector<std::string> args, const std::string& log_file,
                         absl::Duration timeout) {
  CommandResult r;
  std::remove(log_file.c_str());
  SubprocessOptions opts;
  opts.binary = binary;
  opts.args = std::move(args);
  opts.log_file = log_file;
  auto p = Subprocess::Start(opts);
  if (!p.ok()) {
    r.output = std::string(p.status().message());
    return r;
  }
  auto code = (*p)->Wait(timeout);
  if (!code.has_value()) {
    (*p)->Stop(absl::Seconds(2));
    r.output = "timed out\n";
  }
  r.exit_code = code.value_or(-1);
  r.output += ReadFileText(log_file);
  return r;
}

CommandResult MiniCluster::Cli(std::vector<std::string> args, absl::Duration timeout) {
  args.push_back(absl::StrCat("--coordinator=", coordinator_address_));
  args.insert(args.end(), options_.cli_flags.begin(), options_.cli_flags.end());
  return RunCommand(BinaryPath("tessera"), std::move(args), dir_.Sub(absl::StrCat("cli-", next_cli_++, ".out")),
                    timeout);
}

absl::StatusOr<JobStatus> MiniCluster::WaitForJob(uint64_t job, absl::Duration timeout,
                                                  const std::function<bool(const JobStatus&)>& pred) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<JobStatus> last = absl::DeadlineExceededError("no status yet");
  for (;;) {
    last = client_->GetJob(job);
    if (last.ok() && pred(*last)) return last;
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("job ", job, " did not reach the expected state in ",
                                                      absl::FormatDuration(timeout), "; last: ",
                                                      last.ok() ? last->ShortDebugString().substr(0, 800)
                                                                : std::string(last.status().message())));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

absl::StatusOr<JobStatus> MiniCluster::WaitForJobEnd(uint64_t job, absl::Duration timeout) {
  return WaitForJob(job, timeout, [](const JobStatus& j) {
    return j.state() == SUCCEEDED || j.state() == FAILED || j.state() == CANCELLED;
  });
}

absl::StatusOr<ClusterStatusResponse> MiniCluster::WaitForStatus(
    absl::Duration timeout, const std::function<bool(const ClusterStatusResponse&)>& pred) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    auto st = client_->ClusterStatus();
    if (st.ok() && pred(*st)) return st;
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("cluster status did not reach the expected state; last: ",
                                                      st.ok() ? st->ShortDebugString().substr(0, 800)
                                                              : std::string(st.status().message())));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

bool HaveFashionMnist() {
  std::ifstream f(absl::StrCat(kFmnist, "train-images-idx3-ubyte.gz"));
  return f.good();
}

absl::StatusOr<std::string> WriteFashionMnistLibsvm(const std::string& dir, const std::string& name, bool train,
                                                    size_t n, int binary_positive) {
  const std::string prefix = absl::StrCat(kFmnist, train ? "train" : "t10k");
  auto data = data::ReadIdx(prefix + "-images-idx3-ubyte.gz", prefix + "-labels-idx1-ubyte.gz", 0, n);
  if (!data.ok()) return data.status();
  const std::string path = absl::StrCat(dir, "/", name);
  if (auto s = data::WriteLibsvm(*data, path, binary_positive); !s.ok()) return s;
  return path;
}

std::string WriteJobSpec(const std::string& dir, const std::string& name, const std::string& json) {
  const std::string path = absl::StrCat(dir, "/", name);
  std::ofstream(path) << json;
  return path;
}

}  // namespace tessera::testing
