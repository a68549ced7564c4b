// MiniCluster: a real Tessera cluster for tests — a coordinator and N servers as child processes
// on 127.0.0.1 with free ports, each with its own directory under a temporary root. Components can
// be killed, stopped, continued and restarted on the same directories; workers and the CLI run as
// real processes too. Everything is stopped (by PID) when the MiniCluster is destroyed.
#ifndef TESSERA_TESTS_TESTING_MINI_CLUSTER_H_
#define TESSERA_TESTS_TESTING_MINI_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "tessera/v1/coordinator.pb.h"
#include "tests/testing/daemons.h"

namespace tessera::testing {

struct MiniClusterOptions {
  int servers = 2;
  std::string heartbeat_interval = "100ms";
  std::string heartbeat_timeout = "1s";
  std::string lease_timeout = "3s";
  // Extra flags for every daemon (e.g. security flags).
  std::vector<std::string> coordinator_flags;
  std::vector<std::string> server_flags;
  std::vector<std::string> worker_flags;
  std::vector<std::string> cli_flags;
  bool metrics = false;
  // Security for the cluster's own client (match the daemons' flags).
  std::shared_ptr<const Security> security;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

class MiniCluster {
 public:
  explicit MiniCluster(MiniClusterOptions options = {});
  ~MiniCluster();

  // Starts the coordinator and the servers, and waits until every server registered.
  absl::Status Start();

  const std::string& root() const { return dir_.path(); }
  const std::string& coordinator_address() const { return coordinator_address_; }
  Daemon& coordinator() { return coordinator_; }
  Daemon& server(int i) { return servers_[i]; }
  int num_servers() const { return static_cast<int>(servers_.size()); }
  client::CoordinatorClient& client() { return *client_; }

  // Starts the coordinator again on its state dir and port (after KillCoordinator()).
  absl::Status RestartCoordinator();
  void KillCoordinator(int signal = 9);
  // Starts server i again on its data dir (after its process ended); port 0 = a new free port.
  absl::Status RestartServer(int i);
  // Adds a server (a new data dir).
  absl::Status AddServer();

  // Starts a tessera-worker for `job` named `name` with extra flags.
  absl::StatusOr<std::unique_ptr<Subprocess>> StartWorker(uint64_t job, const std::string& name,
                                                          std::vector<std::string> flags = {});
  // Log file of the worker `name`.
  std::string WorkerLog(const std::string& name) const;
  // Runs the `tessera` CLI with `args` against this cluster; waits up to `timeout`.
  CommandResult Cli(std::vector<std::string> args, absl::Duration timeout = absl::Seconds(60));

  // Polls GetJob until `pred` holds or `timeout` passes; returns the last status.
  absl::StatusOr<tessera::v1::JobStatus> WaitForJob(uint64_t job, absl::Duration timeout,
                                                    const std::function<bool(const tessera::v1::JobStatus&)>& pred);
  // Waits until the job ended (SUCCEEDED, FAILED or CANCELLED).
  absl::StatusOr<tessera::v1::JobStatus> WaitForJobEnd(uint64_t job, absl::Duration timeout);
  // Polls ClusterStatus until `pred` holds.
  absl::StatusOr<tessera::v1::ClusterStatusResponse> WaitForStatus(
      absl::Duration timeout, const std::function<bool(const tessera::v1::ClusterStatusResponse&)>& pred);

  // Metrics ports (when options.metrics).
  int coordinator_metrics_port() const { return coordinator_metrics_port_; }
  int server_metrics_port(int i) const { return server_metrics_ports_[i]; }

 private:
  absl::StatusOr<Daemon> StartServerProcess(int i, int port);
  absl::Status StartCoordinatorProcess(int port);

  const MiniClusterOptions options_;
  TempDir dir_;
  Daemon coordinator_;
  int coordinator_port_ = 0;
  std::string coordinator_address_;
  std::vector<Daemon> servers_;
  int coordinator_metrics_port_ = 0;
  std::vector<int> server_metrics_ports_;
  std::unique_ptr<client::CoordinatorClient> client_;
  int next_cli_ = 0;
};

// Command output of a finished Subprocess run via RunCommand.
CommandResult RunCommand(const std::string& binary, std::vector<std::string> args, const std::string& log_file,
                         absl::Duration timeout);

// Writes the first `n` examples of a Fashion-MNIST file pair as libsvm text (pixels / 255, zero
// pixels left out), for small real-data jobs. `binary_positive` >= 0 makes labels 1 for that class
// and 0 otherwise. Returns the path.
absl::StatusOr<std::string> WriteFashionMnistLibsvm(const std::string& dir, const std::string& name, bool train,
                                                    size_t n, int binary_positive = -1);
// True when the Fashion-MNIST files are installed.
bool HaveFashionMnist();

// Writes a JSON job spec file and returns its path.
std::string WriteJobSpec(const std::string& dir, const std::string& name, const std::string& json);

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_TESTING_MINI_CLUSTER_H_
