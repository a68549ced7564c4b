#include "common/rpc.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"
#include "common/security.h"
#include "absl/strings/str_cat.h"

namespace tessera {

absl::StatusOr<RunningServer> StartRpcServer(const RpcServerOptions& options,
                                             const std::vector<grpc::Service*>& services) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  RunningServer running;
  const std::string address = JoinHostPort(options.host, options.port);
  const auto creds = options.security ? options.security->ServerCredentials() : grpc::InsecureServerCredentials();
  builder.AddListeningPort(address, creds, &running.port);
  if (!options.unix_socket.empty()) {
    ::unlink(options.unix_socket.c_str());
    builder.AddListeningPort("unix:" + options.unix_socket, creds);
  }
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  for (grpc::Service* s : services) builder.RegisterService(s);
  if (options.metrics != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
    interceptors.push_back(options.metrics->InterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  running.server = builder.BuildAndStart();
  if (running.server == nullptr || running.port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address,
                                               options.unix_socket.empty() ? "" : " / unix:",
                                               options.unix_socket));
  }
  return running;
}

namespace {
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address, const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Reconnect quickly after a server restart instead of backing off for up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (options.connection_index != 0) {
    args.SetInt("tessera.connection_index", options.connection_index);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  const auto creds = options.security ? options.security->ChannelCredentials() : grpc::InsecureChannelCredentials();
  auto token = options.security ? options.security->TokenInterceptor() : nullptr;
  if (token == nullptr) return grpc::CreateCustomChannel(address, creds, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::move(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, creds, args, std::move(interceptors));
}
}  // namespace

std::shared_ptr<grpc::Channel> CreateChannel(const std::string& address, const ChannelOptions& options) {
  // Channels live as long as the process, one per address, options and credentials. gRPC advises
  // reusing channels, and gRPC 1.51 can abort (grpc_cq_internal_unref: prior > 0) when a channel's
  // callback queue is torn down while a finished call is still being cleaned up, which a process
  // that creates and drops clients (tests, the CLI) would otherwise risk. Deliberately never freed.
  static absl::Mutex* mu = new absl::Mutex;
  // The entry keeps the Security object alive too, so its address (part of the key) is never reused.
  struct Entry {
    std::shared_ptr<const Security> security;
    std::shared_ptr<grpc::Channel> channel;
  };
  static auto* cache = new absl::flat_hash_map<std::string, Entry>;
  const std::string key = absl::StrCat(address, "|", options.max_message_bytes, "|", options.connection_index, "|",
                                       reinterpret_cast<uintptr_t>(options.security.get()));
  absl::MutexLock lock(mu);
  Entry& entry = (*cache)[key];
  if (entry.channel == nullptr) entry = {options.security, NewChannel(address, options)};
  return entry.channel;
}

absl::Status WritePortFile(const std::string& path, int port) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.good()) return absl::InternalError(absl::StrCat("cannot write port file ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

namespace {
sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockShutdownSignals() {
  sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int WaitForShutdownSignal() {
  sigset_t set = ShutdownSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

std::string JoinHostPort(const std::string& host, int port) {
  if (absl::StrContains(host, ':') && !absl::StartsWith(host, "[")) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

}  // namespace tessera
