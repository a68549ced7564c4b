// tessera-server: one parameter-server shard.
#include <prometheus/exposer.h>
#include <unistd.h>

#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/security_flags.h"
#include "server/checkpoint/checkpoint.h"
#include "server/coordinator_link.h"
#include "server/parameter_service.h"
#include "server/shard_store.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on (0.0.0.0 for all interfaces, 127.0.0.1 for loopback only).");
ABSL_FLAG(int, port, 0, "TCP port to listen on; 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "", "When set, the bound port is written to this file once the server is ready.");
ABSL_FLAG(std::string, unix_socket, "", "Also listen on this Unix-domain socket path (fast path for co-located clients).");
ABSL_FLAG(std::string, data_dir, "", "Directory for checkpoints and this server's identity; created if missing. A server restarted on the same directory gets its shard back.");
ABSL_FLAG(std::string, coordinator, "", "Coordinator address (host:port). Empty: a standalone server that owns every key.");
ABSL_FLAG(std::string, advertise_host, "", "Host name or address clients use to reach this server (default: --host, or this machine's hostname when --host is 0.0.0.0).");
ABSL_FLAG(int, metrics_port, -1, "Serve Prometheus metrics over HTTP on this port (0 picks one, -1 disables).");
ABSL_FLAG(std::string, metrics_port_file, "", "When set, the bound metrics port is written here.");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error or off.");
ABSL_FLAG(int, max_message_mb, 256, "Largest request or response accepted, in MiB; larger ones get RESOURCE_EXHAUSTED.");

namespace {

std::vector<prometheus::MetricFamily> CollectShard(tessera::server::ShardStore* store) {
  tessera::v1::ServerStatusResponse st;
  store->FillStatus(&st);
  auto rows = tessera::GaugeFamily("tessera_table_rows", "Rows (sparse) or elements (dense) held per table");
  auto bytes = tessera::GaugeFamily("tessera_table_bytes", "Bytes of weights, optimizer slots and index per table");
  for (const auto& t : st.tables()) {
    tessera::AddGauge(&rows, {{"table", t.name()}}, static_cast<double>(t.rows()));
    tessera::AddGauge(&bytes, {{"table", t.name()}}, static_cast<double>(t.bytes()));
  }
  auto ops = tessera::CounterFamily("tessera_shard_operations_total", "Pulls, pushes and duplicate pushes applied once");
  tessera::AddCounter(&ops, {{"op", "pull"}}, static_cast<double>(st.pulls()));
  tessera::AddCounter(&ops, {{"op", "push"}}, static_cast<double>(st.pushes()));
  tessera::AddCounter(&ops, {{"op", "duplicate_push"}}, static_cast<double>(st.duplicate_pushes()));
  tessera::AddCounter(&ops, {{"op", "rejected"}}, static_cast<double>(st.rejected_requests()));
  auto keys = tessera::CounterFamily("tessera_shard_keys_total", "Keys (sparse rows or dense elements) moved");
  tessera::AddCounter(&keys, {{"op", "pull"}}, static_cast<double>(st.keys_pulled()));
  tessera::AddCounter(&keys, {{"op", "push"}}, static_cast<double>(st.keys_pushed()));
  auto rss = tessera::GaugeFamily("tessera_resident_bytes", "Resident memory of the server process");
  tessera::AddGauge(&rss, {}, static_cast<double>(st.resident_bytes()));
  auto ver = tessera::GaugeFamily("tessera_shard_map_version", "Shard map version this server holds");
  tessera::AddGauge(&ver, {}, static_cast<double>(st.shard_map_version()));
  return {rows, bytes, ops, keys, rss, ver};
}

std::string AdvertiseHost(const std::string& host) {
  if (!absl::GetFlag(FLAGS_advertise_host).empty()) return absl::GetFlag(FLAGS_advertise_host);
  if (host != "0.0.0.0" && host != "::" && !host.empty()) return host;
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0') return name;
  return "127.0.0.1";
}

}  // namespace

int main(int argc, char** argv) {
  tessera::BlockShutdownSignals();
  tessera::ParseFlags(argc, argv,
                      "a Tessera parameter-server shard.\n"
                      "Holds sparse and dense tables, applies pushed gradients with server-side optimizers and\n"
                      "serves tessera.v1.ParameterService, grpc.health.v1.Health and reflection.\n\n"
                      "Usage: tessera-server [--port=N] [--port_file=FILE] [--data_dir=DIR] [--coordinator=HOST:PORT] [flags...]");

  if (auto s = tessera::SetupLogging("server", absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    std::fprintf(stderr, "tessera-server: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  const int max_mb = absl::GetFlag(FLAGS_max_message_mb);
  if (max_mb < 1 || max_mb > 2047) {
    std::fprintf(stderr, "tessera-server: --max_message_mb=%d must be in 1..2047\n", max_mb);
    return 2;
  }
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (!data_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(data_dir, ec);
    if (ec) {
      std::fprintf(stderr, "tessera-server: cannot create --data_dir %s: %s\n", data_dir.c_str(), ec.message().c_str());
      return 2;
    }
  }
  const std::string coordinator = absl::GetFlag(FLAGS_coordinator);
  const std::string checkpoint_root = data_dir.empty() ? std::string() : data_dir + "/checkpoints";

  if (auto f = tessera::ConfigureFaultsFromFlagsAndEnv(); !f.ok()) {
    std::fprintf(stderr, "tessera-server: --faults: %s\n", std::string(f.message()).c_str());
    return 2;
  }
  auto security = tessera::Security::Load(tessera::SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::fprintf(stderr, "tessera-server: %s\n", std::string(security.status().message()).c_str());
    return 2;
  }
  tessera::server::ShardStore store({.data_dir = data_dir});
  if (!coordinator.empty()) store.SetServing(false);  // until registered and restored
  tessera::Metrics metrics("server");
  tessera::server::ParameterServiceImpl service(&store, tessera::server::MakeCheckpointHooks(&store, checkpoint_root),
                                                *security, &metrics);
  metrics.AddCollector([&store] { return CollectShard(&store); });

  tessera::RpcServerOptions rpc;
  rpc.host = absl::GetFlag(FLAGS_host);
  rpc.port = absl::GetFlag(FLAGS_port);
  rpc.unix_socket = absl::GetFlag(FLAGS_unix_socket);
  rpc.max_message_bytes = max_mb << 20;
  rpc.metrics = &metrics;
  rpc.security = *security;
  auto running = tessera::StartRpcServer(rpc, {&service});
  if (!running.ok()) {
    spdlog::error("{}", running.status());
    return 1;
  }
  running->server->GetHealthCheckService()->SetServingStatus(store.serving());
  spdlog::info("tessera-server listening on {}{} ({})", tessera::JoinHostPort(rpc.host, running->port),
               rpc.unix_socket.empty() ? "" : absl::StrCat(" and unix:", rpc.unix_socket), (*security)->Describe());

  auto exposer = tessera::StartMetricsServerFromFlags(rpc.host, absl::GetFlag(FLAGS_metrics_port),
                                                      absl::GetFlag(FLAGS_metrics_port_file), &metrics);
  if (!exposer.ok()) {
    spdlog::error("{}", exposer.status());
    return 1;
  }

  std::unique_ptr<tessera::server::CoordinatorLink> link;
  if (!coordinator.empty()) {
    auto id = tessera::server::LoadOrCreateServerId(data_dir);
    if (!id.ok()) {
      spdlog::error("server identity: {}", id.status());
      return 1;
    }
    tessera::server::CoordinatorLinkOptions lo;
    lo.coordinator = coordinator;
    lo.advertise_address = tessera::JoinHostPort(AdvertiseHost(rpc.host), running->port);
    lo.server_id = *id;
    lo.checkpoint_root = checkpoint_root;
    lo.security = *security;
    link = std::make_unique<tessera::server::CoordinatorLink>(lo, &store);
    if (auto s = link->Start(absl::Minutes(5)); !s.ok()) {
      spdlog::error("{}", s);
      return 1;
    }
    store.SetServing(true);
    running->server->GetHealthCheckService()->SetServingStatus(true);
  }
  if (const std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    if (auto s = tessera::WritePortFile(pf, running->port); !s.ok()) {
      spdlog::error("{}", s);
      return 1;
    }
  }

  const int sig = tessera::WaitForShutdownSignal();
  spdlog::info("signal {}: shutting down (in-flight requests get 5 s to finish)", sig);
  running->server->GetHealthCheckService()->SetServingStatus(false);
  link.reset();
  running->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  running->server->Wait();
  spdlog::info("tessera-server stopped");
  return 0;
}
