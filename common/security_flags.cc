#include "common/security_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, tls_cert, "", "PEM certificate of this process; with --tls_key and --tls_ca all gRPC traffic is mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key matching --tls_cert.");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificate; peers must present a certificate it signed.");
ABSL_FLAG(std::string, auth_token_file, "", "File holding a bearer token that every RPC must carry (servers check it, clients send it).");

namespace tessera {

SecurityOptions SecurityOptionsFromFlags() {
  SecurityOptions o;
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  o.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  return o;
}

}  // namespace tessera
