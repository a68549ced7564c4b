// Mutual TLS and bearer tokens on real processes, with a CA and certificates made at test time.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/kv_client.h"
#include "common/job_json.h"
#include "common/rpc.h"
#include "common/security.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tessera/v1/parameter.grpc.pb.h"
#include "tests/testing/mini_cluster.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

constexpr char kToken[] = "s3cr3t-t0ken-7f2a";

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A CA that signs the cluster's certificates, and a second CA nobody trusts.
    const std::string script = absl::StrCat(R"(set -e
cd )", dir_.path(), R"(
ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"; }
for ca in ca rogue-ca; do ec $ca; openssl req -x509 -new -key $ca.key -out $ca.crt -days 2 -subj "/CN=$ca" 2>/dev/null; done
sign() {  # name ca
  ec $1
  openssl req -new -key $1.key -out $1.csr -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > $1.ext
  openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -CAcreateserial -out $1.crt -days 2 -extfile $1.ext 2>/dev/null
}
sign node ca
sign client ca
sign rogue rogue-ca
printf '%s\n' )", kToken, R"( > token
)");
    auto r = testing::RunCommand("/bin/bash", {"-c", script}, dir_.Sub("openssl.out"), absl::Seconds(60));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  std::vector<std::string> TlsFlags(const std::string& who = "node") {
    return {absl::StrCat("--tls_cert=", dir_.Sub(who + ".crt")), absl::StrCat("--tls_key=", dir_.Sub(who + ".key")),
            absl::StrCat("--tls_ca=", dir_.Sub("ca.crt"))};
  }
  std::shared_ptr<const Security> ClientSecurity(const std::string& who, const std::string& ca, bool token) {
    SecurityOptions o;
    if (!who.empty()) {
      o.tls_cert = dir_.Sub(who + ".crt");
      o.tls_key = dir_.Sub(who + ".key");
      o.tls_ca = dir_.Sub(ca + ".crt");
    }
    if (token) o.auth_token_file = dir_.Sub("token");
    auto s = Security::Load(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return *s;
  }
  // A ServerStatus call to `address` with `security`; returns its status.
  static grpc::Status Call(const std::string& address, std::shared_ptr<const Security> security) {
    auto stub = tessera::v1::ParameterService::NewStub(CreateChannel(address, ChannelOptions{.security = security}));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    tessera::v1::ServerStatusResponse resp;
    return stub->ServerStatus(&ctx, tessera::v1::ServerStatusRequest(), &resp);
  }
  testing::TempDir dir_;
};

TEST_F(SecurityTest, TlsServerRefusesPlaintextAndUntrustedClients) {
  auto server = testing::StartServer(dir_.path(), "s", TlsFlags());
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("localhost:", server->port);
  EXPECT_TRUE(Call(address, ClientSecurity("client", "ca", false)).ok()) << "a certificate the CA signed";
  const grpc::Status plaintext = Call(address, nullptr);
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE) << plaintext.error_message();
  // The rogue client trusts the real CA for the server but presents a certificate it signed itself.
  SecurityOptions rogue;
  rogue.tls_cert = dir_.Sub("rogue.crt");
  rogue.tls_key = dir_.Sub("rogue.key");
  rogue.tls_ca = dir_.Sub("ca.crt");
  auto rs = Security::Load(rogue);
  ASSERT_TRUE(rs.ok());
  const grpc::Status untrusted = Call(address, *rs);
  EXPECT_EQ(untrusted.error_code(), grpc::StatusCode::UNAVAILABLE) << untrusted.error_message();
  EXPECT_TRUE(server->process->Running()) << "refused handshakes do not hurt the server";
}

TEST_F(SecurityTest, TokenIsRequiredAndCountedAndNeverLogged) {
  auto server = testing::StartServer(dir_.path(), "s",
                                     {absl::StrCat("--auth_token_file=", dir_.Sub("token")), "--metrics_port=0",
                                      absl::StrCat("--metrics_port_file=", dir_.Sub("metrics.port"))});
  ASSERT_TRUE(server.ok()) << server.status();
  const grpc::Status none = Call(server->address, nullptr);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(none.error_message(), HasSubstr("requires a bearer token"));
  std::ofstream(dir_.Sub("wrong")) << "not-the-token\n";
  SecurityOptions wrong;
  wrong.auth_token_file = dir_.Sub("wrong");
  const grpc::Status bad = Call(server->address, *Security::Load(wrong));
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(bad.error_message(), HasSubstr("wrong bearer token"));
  EXPECT_TRUE(Call(server->address, ClientSecurity("", "", true)).ok());
  // Probes still work without a token: health is open.
  {
    auto health = grpc::health::v1::Health::NewStub(CreateChannel(server->address));
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse resp;
    EXPECT_TRUE(health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp).ok());
  }
  auto port = WaitForPortFile(dir_.Sub("metrics.port"), absl::Seconds(5), server->process.get());
  ASSERT_TRUE(port.ok());
  auto curl = testing::RunCommand("/usr/bin/curl", {"-sS", absl::StrCat("http://127.0.0.1:", *port, "/metrics")},
                                  dir_.Sub("curl.out"), absl::Seconds(10));
  EXPECT_THAT(curl.output, HasSubstr("tessera_rpc_unauthenticated_total{daemon=\"server\",method=\"ServerStatus\",service=\"tessera.v1.ParameterService\"} 2"));
  server->process->Stop();
  EXPECT_THAT(server->Log(), ::testing::Not(HasSubstr(kToken)));
}

TEST_F(SecurityTest, JobTrainsEndToEndWithTlsAndTokens) {
  std::vector<std::string> flags = TlsFlags();
  flags.push_back(absl::StrCat("--auth_token_file=", dir_.Sub("token")));
  testing::MiniClusterOptions o;
  o.coordinator_flags = flags;
  o.server_flags = flags;
  o.server_flags.push_back("--advertise_host=localhost");
  o.worker_flags = flags;
  o.cli_flags = flags;
  o.security = ClientSecurity("client", "ca", true);
  testing::MiniCluster cluster(o);
  ASSERT_TRUE(cluster.Start().ok());
  std::string text;
  for (int i = 0; i < 300; ++i) absl::StrAppend(&text, i % 2, " ", 1 + i % 5, ":1 ", 7 + (i % 2), ":1\n");
  std::ofstream(dir_.Sub("train.libsvm")) << text;
  const std::string spec = testing::WriteJobSpec(dir_.path(), "job.json", absl::StrCat(R"({"model": {"type": "logistic"},
    "data": {"train": ")", dir_.Sub("train.libsvm"), R"(", "test": ")", dir_.Sub("train.libsvm"), R"("},
    "optimizer": {"type": "adagrad", "learning_rate": 0.5}, "training": {"epochs": 3, "batch_size": 16}})"));
  auto r = cluster.Cli({"submit", spec});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto w = cluster.StartWorker(1, "w0");
  ASSERT_TRUE(w.ok());
  auto job = cluster.WaitForJobEnd(1, absl::Seconds(60));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), tessera::v1::SUCCEEDED) << job->message();
  EXPECT_GT(job->evaluations(0).accuracy(), 0.9);
  // The CLI without credentials is turned away.
  auto denied = testing::RunCommand(testing::BinaryPath("tessera"),
                                    {"status", absl::StrCat("--coordinator=", cluster.coordinator_address())},
                                    dir_.Sub("denied.out"), absl::Seconds(20));
  EXPECT_NE(denied.exit_code, 0);
  for (const std::string& log : {cluster.coordinator().Log(), cluster.server(0).Log()}) {
    EXPECT_THAT(log, ::testing::Not(HasSubstr(kToken)));
    EXPECT_THAT(log, HasSubstr("mutual TLS, bearer token"));
  }
}

}  // namespace
}  // namespace tessera
