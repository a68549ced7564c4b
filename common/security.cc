#include "common/security.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/metrics.h"

namespace tessera {
namespace {

absl::StatusOr<std::string> ReadAll(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string header) : header_(std::move(header)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  const std::string header_;
};

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Security>> Security::Load(const SecurityOptions& o) {
  auto s = std::make_shared<Security>();
  const int tls_files = !o.tls_cert.empty() + !o.tls_key.empty() + !o.tls_ca.empty();
  if (tls_files != 0 && tls_files != 3) {
    return absl::InvalidArgumentError("--tls_cert, --tls_key and --tls_ca must be given together (mutual TLS)");
  }
  if (tls_files == 3) {
    auto cert = ReadAll(o.tls_cert, "--tls_cert");
    if (!cert.ok()) return cert.status();
    auto key = ReadAll(o.tls_key, "--tls_key");
    if (!key.ok()) return key.status();
    auto ca = ReadAll(o.tls_ca, "--tls_ca");
    if (!ca.ok()) return ca.status();
    s->cert_ = *cert;
    s->key_ = *key;
    s->ca_ = *ca;
  }
  if (!o.auth_token_file.empty()) {
    auto token = ReadAll(o.auth_token_file, "--auth_token_file");
    if (!token.ok()) return token.status();
    s->token_ = std::string(absl::StripAsciiWhitespace(*token));
    if (s->token_.empty()) return absl::InvalidArgumentError(absl::StrCat("--auth_token_file: ", o.auth_token_file, " is empty"));
  }
  return std::shared_ptr<const Security>(std::move(s));
}

std::shared_ptr<const Security> Security::Insecure() { return std::make_shared<Security>(); }

std::shared_ptr<grpc::ServerCredentials> Security::ServerCredentials() const {
  if (!tls()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_root_certs = ca_;
  opts.pem_key_cert_pairs.push_back({key_, cert_});
  return grpc::SslServerCredentials(opts);
}

std::shared_ptr<grpc::ChannelCredentials> Security::ChannelCredentials() const {
  if (!tls()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = ca_;
  opts.pem_private_key = key_;
  opts.pem_cert_chain = cert_;
  return grpc::SslCredentials(opts);
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> Security::TokenInterceptor() const {
  if (token_.empty()) return nullptr;
  return std::make_unique<TokenInterceptorFactory>(absl::StrCat("Bearer ", token_));
}

absl::Status Security::CheckToken(const grpc::ServerContextBase& ctx, const char* method, Metrics* metrics) const {
  if (token_.empty()) return absl::OkStatus();
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  bool ok = false;
  if (it != md.end()) {
    absl::string_view v(it->second.data(), it->second.size());
    ok = absl::ConsumePrefix(&v, "Bearer ") && ConstantTimeEquals(v, token_);
  }
  if (ok) return absl::OkStatus();
  if (metrics != nullptr) metrics->CountUnauthenticated(method);
  return absl::UnauthenticatedError(it == md.end() ? "this server requires a bearer token (--auth_token_file)"
                                                   : "wrong bearer token");
}

std::string Security::Describe() const {
  if (tls() && has_token()) return "mutual TLS, bearer token";
  if (tls()) return "mutual TLS";
  if (has_token()) return "plaintext, bearer token";
  return "plaintext";
}

}  // namespace tessera
