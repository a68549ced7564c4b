// tessera-server: one parameter-server shard.
#include "common/flags.h"
#include "common/logging.h"

#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/rpc.h"
#include "server/parameter_service.h"
#include "server/shard_store.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on (0.0.0.0 for all interfaces, 127.0.0.1 for loopback only).");
ABSL_FLAG(int, port, 0, "TCP port to listen on; 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "", "When set, the bound port is written to this file once the server is ready.");
ABSL_FLAG(std::string, unix_socket, "", "Also listen on this Unix-domain socket path (fast path for co-located clients).");
ABSL_FLAG(std::string, data_dir, "", "Directory for checkpoints and this server's identity; created if missing.");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error or off.");
ABSL_FLAG(int, max_message_mb, 256, "Largest request or response accepted, in MiB; larger ones get RESOURCE_EXHAUSTED.");

int main(int argc, char** argv) {
  tessera::BlockShutdownSignals();
  tessera::ParseFlags(argc, argv,
      "tessera-server: a Tessera parameter-server shard.\n"
      "Holds sparse and dense tables, applies pushed gradients with server-side optimizers and\n"
      "serves tessera.v1.ParameterService, grpc.health.v1.Health and reflection.\n\n"
      "Usage: tessera-server [--port=N] [--port_file=FILE] [--data_dir=DIR] [flags...]");

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

  tessera::server::ShardStore store({.data_dir = data_dir});
  tessera::server::ParameterServiceImpl service(&store);

  tessera::RpcServerOptions rpc;
  rpc.host = absl::GetFlag(FLAGS_host);
  rpc.port = absl::GetFlag(FLAGS_port);
  rpc.unix_socket = absl::GetFlag(FLAGS_unix_socket);
  rpc.max_message_bytes = max_mb << 20;
  auto running = tessera::StartRpcServer(rpc, {&service});
  if (!running.ok()) {
    spdlog::error("{}", running.status().message());
    return 1;
  }
  spdlog::info("tessera-server listening on {}{}", tessera::JoinHostPort(rpc.host, running->port),
               rpc.unix_socket.empty() ? "" : absl::StrCat(" and unix:", rpc.unix_socket));
  if (const std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    if (auto s = tessera::WritePortFile(pf, running->port); !s.ok()) {
      spdlog::error("{}", s.message());
      return 1;
    }
  }

  const int sig = tessera::WaitForShutdownSignal();
  spdlog::info("signal {}: shutting down (in-flight requests get 5 s to finish)", sig);
  running->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  running->server->Wait();
  spdlog::info("tessera-server stopped");
  return 0;
}
