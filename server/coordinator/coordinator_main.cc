// tessera-coordinator: membership, shard map, jobs, data leases and clocks of a Tessera cluster.
#include <prometheus/exposer.h>

#include <atomic>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/security_flags.h"
#include "server/coordinator/coordinator.h"
#include "server/coordinator/coordinator_service.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on (127.0.0.1 for loopback only).");
ABSL_FLAG(int, port, 0, "TCP port to listen on; 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "", "When set, the bound port is written here once the coordinator is ready.");
ABSL_FLAG(std::string, state_dir, "", "Directory for the coordinator's durable state; restarting on the same directory resumes the cluster. Empty keeps state in memory only.");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(1), "How often servers should heartbeat.");
ABSL_FLAG(absl::Duration, heartbeat_timeout, absl::Seconds(5), "A server silent this long is marked dead.");
ABSL_FLAG(absl::Duration, lease_timeout, absl::Seconds(10), "A data lease not renewed this long goes back to the queue; a worker silent this long is marked dead.");
ABSL_FLAG(int, metrics_port, -1, "Serve Prometheus metrics over HTTP on this port (0 picks one, -1 disables).");
ABSL_FLAG(std::string, metrics_port_file, "", "When set, the bound metrics port is written here.");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error or off.");

namespace {

std::vector<prometheus::MetricFamily> CollectCluster(tessera::coordinator::Coordinator* c) {
  using tessera::AddGauge;
  const auto st = c->ClusterStatus();
  auto servers = tessera::GaugeFamily("tessera_cluster_servers", "Servers known to the coordinator, by liveness");
  int alive = 0, dead = 0;
  for (const auto& s : st.servers()) (s.alive() ? alive : dead)++;
  AddGauge(&servers, {{"state", "alive"}}, alive);
  AddGauge(&servers, {{"state", "dead"}}, dead);
  auto version = tessera::GaugeFamily("tessera_shard_map_version", "Current shard map version");
  AddGauge(&version, {}, static_cast<double>(st.shard_map().version()));
  auto rows = tessera::GaugeFamily("tessera_cluster_rows", "Rows held per shard (last heartbeat)");
  auto bytes = tessera::GaugeFamily("tessera_cluster_bytes", "Table bytes held per shard (last heartbeat)");
  for (const auto& s : st.servers()) {
    uint64_t r = 0, b = 0;
    for (const auto& t : s.status().tables()) {
      r += t.rows();
      b += t.bytes();
    }
    AddGauge(&rows, {{"shard", absl::StrCat(s.shard_id())}}, static_cast<double>(r));
    AddGauge(&bytes, {{"shard", absl::StrCat(s.shard_id())}}, static_cast<double>(b));
  }
  auto jobs = tessera::GaugeFamily("tessera_jobs", "Jobs by state");
  std::map<std::string, int> by_state;
  for (const auto& j : st.jobs()) by_state[tessera::v1::JobState_Name(j.state())]++;
  for (const auto& [k, v] : by_state) AddGauge(&jobs, {{"state", k}}, v);
  auto examples = tessera::GaugeFamily("tessera_job_examples_done", "Training examples processed per job");
  auto eps = tessera::GaugeFamily("tessera_job_examples_per_second", "Training throughput per job");
  auto epoch = tessera::GaugeFamily("tessera_job_epoch", "Current epoch (0-based) per job");
  auto loss = tessera::GaugeFamily("tessera_job_recent_loss", "Recent training loss per job");
  for (const auto& j : st.jobs()) {
    std::map<std::string, std::string> l = {{"job", absl::StrCat(j.job_id())}, {"name", j.name()}};
    AddGauge(&examples, l, static_cast<double>(j.examples_done()));
    AddGauge(&eps, l, j.examples_per_sec());
    AddGauge(&epoch, l, j.epoch());
    AddGauge(&loss, l, j.recent_loss());
  }
  const auto counters = c->counters();
  auto leases = tessera::CounterFamily("tessera_leases_total", "Data leases granted and expired");
  tessera::AddCounter(&leases, {{"event", "granted"}}, static_cast<double>(counters.leases_granted));
  tessera::AddCounter(&leases, {{"event", "expired"}}, static_cast<double>(counters.leases_expired));
  return {servers, version, rows, bytes, jobs, examples, eps, epoch, loss, leases};
}

}  // namespace

int main(int argc, char** argv) {
  tessera::BlockShutdownSignals();
  tessera::ParseFlags(argc, argv,
                      "the Tessera coordinator.\n"
                      "Keeps membership, the versioned shard map, jobs, data leases and training clocks;\n"
                      "serves tessera.v1.CoordinatorService, grpc.health.v1.Health and reflection.\n\n"
                      "Usage: tessera-coordinator [--port=N] [--state_dir=DIR] [flags...]");
  if (auto s = tessera::SetupLogging("coordinator", absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    std::fprintf(stderr, "tessera-coordinator: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  tessera::coordinator::CoordinatorOptions options;
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  options.heartbeat_timeout = absl::GetFlag(FLAGS_heartbeat_timeout);
  options.lease_timeout = absl::GetFlag(FLAGS_lease_timeout);
  if (options.heartbeat_timeout <= options.heartbeat_interval || options.lease_timeout <= absl::ZeroDuration()) {
    std::fprintf(stderr, "tessera-coordinator: --heartbeat_timeout must exceed --heartbeat_interval, and --lease_timeout must be > 0\n");
    return 2;
  }
  if (auto f = tessera::ConfigureFaultsFromFlagsAndEnv(); !f.ok()) {
    std::fprintf(stderr, "tessera-coordinator: --faults: %s\n", std::string(f.message()).c_str());
    return 2;
  }
  auto security = tessera::Security::Load(tessera::SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::fprintf(stderr, "tessera-coordinator: %s\n", std::string(security.status().message()).c_str());
    return 2;
  }
  auto coordinator =
      tessera::coordinator::Coordinator::Open(options, tessera::coordinator::NewGrpcServerFleet(absl::Seconds(30), *security));
  if (!coordinator.ok()) {
    spdlog::error("cannot start: {}", coordinator.status());
    return 1;
  }
  tessera::Metrics metrics("coordinator");
  tessera::coordinator::CoordinatorServiceImpl service(coordinator->get(), *security, &metrics);
  metrics.AddCollector([c = coordinator->get()] { return CollectCluster(c); });

  tessera::RpcServerOptions rpc;
  rpc.host = absl::GetFlag(FLAGS_host);
  rpc.port = absl::GetFlag(FLAGS_port);
  rpc.metrics = &metrics;
  rpc.security = *security;
  auto running = tessera::StartRpcServer(rpc, {&service});
  if (!running.ok()) {
    spdlog::error("{}", running.status());
    return 1;
  }
  auto exposer = tessera::StartMetricsServerFromFlags(rpc.host, absl::GetFlag(FLAGS_metrics_port),
                                                      absl::GetFlag(FLAGS_metrics_port_file), &metrics);
  if (!exposer.ok()) {
    spdlog::error("{}", exposer.status());
    return 1;
  }
  spdlog::info("tessera-coordinator listening on {} ({})", tessera::JoinHostPort(rpc.host, running->port),
               (*security)->Describe());
  if (const std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    if (auto s = tessera::WritePortFile(pf, running->port); !s.ok()) {
      spdlog::error("{}", s);
      return 1;
    }
  }

  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    while (!stop.load()) {
      (*coordinator)->Tick();
      absl::SleepFor(absl::Milliseconds(100));
    }
  });
  const int sig = tessera::WaitForShutdownSignal();
  spdlog::info("signal {}: shutting down", sig);
  stop = true;
  ticker.join();
  running->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  running->server->Wait();
  (void)(*coordinator)->Flush();
  spdlog::info("tessera-coordinator stopped");
  return 0;
}
