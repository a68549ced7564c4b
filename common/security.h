// Transport security and authentication for every Tessera peer.
//
// With a certificate, key and CA, all gRPC traffic is TLS and both ends must present a
// certificate signed by the CA (mutual TLS). With an auth token file, every RPC to a Tessera
// service must carry "authorization: Bearer <token>"; the services check it first thing and answer
// UNAUTHENTICATED otherwise (the standard grpc.health.v1 and reflection services stay open, so
// orchestrator probes work). Tokens and keys are never logged or shown in status.
//
// A Security object is immutable after Load(); share it between servers and channels. Thread-safe.
#ifndef TESSERA_COMMON_SECURITY_H_
#define TESSERA_COMMON_SECURITY_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/client_interceptor.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tessera {

class Metrics;

struct SecurityOptions {
  std::string tls_cert;  // PEM certificate chain of this peer
  std::string tls_key;   // PEM private key of this peer
  std::string tls_ca;    // PEM CA that signs every peer's certificate
  std::string auth_token_file;
};

class Security {
 public:
  // Reads the files. INVALID_ARGUMENT when only some TLS files are given; NOT_FOUND naming a
  // missing file; INVALID_ARGUMENT for an empty token file.
  static absl::StatusOr<std::shared_ptr<const Security>> Load(const SecurityOptions& options);
  // Plaintext, no token.
  static std::shared_ptr<const Security> Insecure();

  bool tls() const { return !cert_.empty(); }
  bool has_token() const { return !token_.empty(); }

  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials() const;
  // Adds the bearer token to every call on a channel (nullptr when there is no token).
  std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> TokenInterceptor() const;

  // OK when no token is configured or the call carries the right one; UNAUTHENTICATED otherwise
  // (counted in `metrics` when given). Constant-time comparison.
  absl::Status CheckToken(const grpc::ServerContextBase& ctx, const char* method, Metrics* metrics) const;

  // What this peer does, for the startup log line ("mutual TLS, bearer token"), never secrets.
  std::string Describe() const;

 private:
  std::string cert_, key_, ca_, token_;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_SECURITY_H_
