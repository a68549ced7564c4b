#include "client/demo.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/kv_client.h"
#include "common/process.h"
#include "common/subprocess.h"

namespace tessera::client {

int RunDemo() {
  auto dir = MakeTempDir("tessera-demo");
  if (!dir.ok()) {
    std::fprintf(stderr, "tessera demo: %s\n", std::string(dir.status().message()).c_str());
    return 1;
  }
  SubprocessOptions opts;
  opts.binary = ExecutableDir() + "/tessera-server";
  opts.args = {"--host=127.0.0.1", "--port=0", absl::StrCat("--port_file=", *dir, "/port"),
               absl::StrCat("--data_dir=", *dir, "/data")};
  opts.log_file = *dir + "/server.log";
  auto server = Subprocess::Start(opts);
  if (!server.ok()) {
    std::fprintf(stderr, "tessera demo: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  auto port = WaitForPortFile(*dir + "/port", absl::Seconds(10), server->get());
  if (!port.ok()) {
    std::fprintf(stderr, "tessera demo: %s (log: %s)\n", std::string(port.status().message()).c_str(),
                 opts.log_file.c_str());
    return 1;
  }
  const std::string address = absl::StrCat("127.0.0.1:", *port);
  std::printf("started tessera-server (pid %d) on %s\n", (*server)->pid(), address.c_str());

  auto client = KvClient::Connect({address});
  if (!client.ok()) return 1;
  tessera::v1::TableSpec spec;
  spec.set_name("demo/embedding");
  spec.set_kind(tessera::v1::TableSpec::SPARSE);
  spec.set_dim(4);
  spec.mutable_optimizer()->set_type("adagrad");
  spec.mutable_optimizer()->set_learning_rate(0.1f);
  spec.mutable_initializer()->set_type("uniform");
  spec.mutable_initializer()->set_scale(0.01f);
  spec.mutable_initializer()->set_seed(42);
  auto check = [](const absl::Status& s, const char* what) {
    if (!s.ok()) std::fprintf(stderr, "tessera demo: %s failed: %s\n", what, s.ToString().c_str());
    return s.ok();
  };
  if (!check((*client)->CreateTable(spec), "CreateTable")) return 1;
  std::printf("created sparse table demo/embedding (dim 4, adagrad lr 0.1, uniform(-0.01, 0.01) init)\n");

  const std::vector<uint64_t> keys = {42, 7, 1000003};
  std::vector<float> before(12), after(12);
  auto row = [](const std::vector<float>& v, size_t i) {
    return absl::StrJoin(v.begin() + i * 4, v.begin() + i * 4 + 4, ", ",
                         [](std::string* out, float x) { absl::StrAppend(out, absl::StrFormat("%+.4f", x)); });
  };
  if (!check((*client)->Pull("demo/embedding", keys, absl::MakeSpan(before)), "Pull")) return 1;
  std::printf("pulled 3 rows (first touch gives the deterministic initial values):\n");
  for (size_t i = 0; i < keys.size(); ++i) std::printf("  key %-8llu [%s]\n", (unsigned long long)keys[i], row(before, i).c_str());

  std::vector<float> grads(12);
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = (i % 2 == 0 ? 1.0f : -1.0f) * (1.0f + i / 4);
  if (!check((*client)->PushPull("demo/embedding", keys, grads, absl::MakeSpan(after)), "PushPull")) return 1;
  std::printf("pushed gradients (+-1, +-2, +-3 per row) and pulled the updated rows in one round trip:\n");
  for (size_t i = 0; i < keys.size(); ++i) std::printf("  key %-8llu [%s]\n", (unsigned long long)keys[i], row(after, i).c_str());
  std::printf("each weight moved by lr * g / sqrt(0.1 + g^2) (Adagrad's first step), e.g. %+.4f -> %+.4f\n",
              before[0], after[0]);

  auto st = (*client)->ServerStatus();
  if (!st.empty() && st[0].ok()) {
    std::printf("server status: %llu pulls, %llu pushes, %llu rows in %zu table(s), %.1f MiB resident\n",
                (unsigned long long)st[0]->pulls(), (unsigned long long)st[0]->pushes(),
                (unsigned long long)st[0]->tables(0).rows(), (size_t)st[0]->tables_size(),
                st[0]->resident_bytes() / 1048576.0);
  }
  client->reset();
  const int code = (*server)->Stop();
  std::printf("stopped tessera-server (exit code %d)\n", code);
  RemoveTree(*dir);
  return code == 0 ? 0 : 1;
}

}  // namespace tessera::client
