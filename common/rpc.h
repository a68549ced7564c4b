// gRPC plumbing shared by every Tessera binary: starting a server with health and reflection,
// creating channels with Tessera's limits, port files and shutdown signals.
#ifndef TESSERA_COMMON_RPC_H_
#define TESSERA_COMMON_RPC_H_

#include <grpcpp/channel.h>
#include <grpcpp/server.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tessera {

// Largest message any Tessera peer sends or accepts by default; bigger ones get RESOURCE_EXHAUSTED.
inline constexpr int kDefaultMaxMessageBytes = 256 << 20;

class Metrics;
class Security;

struct RpcServerOptions {
  std::string host = "0.0.0.0";
  int port = 0;             // 0 picks a free port
  std::string unix_socket;  // optional second listener, "unix:" path without the prefix
  int max_message_bytes = kDefaultMaxMessageBytes;
  // When set, every RPC is counted and timed into these metrics.
  Metrics* metrics = nullptr;
  // TLS (when configured); plaintext when null.
  std::shared_ptr<const Security> security;
};

struct RunningServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // the bound TCP port
};

// Builds and starts a gRPC server with `services`, grpc.health.v1 (all services SERVING) and
// server reflection. Fails with UNAVAILABLE naming the address when the port cannot be bound.
absl::StatusOr<RunningServer> StartRpcServer(const RpcServerOptions& options,
                                             const std::vector<grpc::Service*>& services);

struct ChannelOptions {
  int max_message_bytes = kDefaultMaxMessageBytes;
  // Distinct values give distinct TCP connections to the same address (for parallel streams).
  int connection_index = 0;
  // TLS and bearer token (when configured); plaintext when null.
  std::shared_ptr<const Security> security;
};

// A channel to `address` ("host:port" or "unix:/path"). Channels are thread-safe and cached for the
// life of the process: the same address, options and Security object give the same channel.
std::shared_ptr<grpc::Channel> CreateChannel(const std::string& address, const ChannelOptions& options = {});

// Writes `port` to `path` atomically (temporary file + rename), so readers never see half a number.
absl::Status WritePortFile(const std::string& path, int port);

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts later; call first in
// main(). WaitForShutdownSignal() then waits for one of them and returns its number.
void BlockShutdownSignals();
int WaitForShutdownSignal();

// "host:port" for a gRPC target built from a host and a port (IPv6 hosts get brackets).
std::string JoinHostPort(const std::string& host, int port);

}  // namespace tessera

#endif  // TESSERA_COMMON_RPC_H_
