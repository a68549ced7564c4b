#include "tests/testing/daemons.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace tessera::testing {

std::string BinaryPath(const std::string& name) { return absl::StrCat(TESSERA_BINARY_DIR, "/", name); }

TempDir::TempDir() {
  auto dir = MakeTempDir("tessera-test");
  path_ = dir.ok() ? *dir : "/tmp";
}

TempDir::~TempDir() {
  if (std::getenv("TESSERA_KEEP_TEST_DIRS") == nullptr && path_ != "/tmp") RemoveTree(path_);
}

std::string Daemon::Log() const {
  std::ifstream in(log_file);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<Daemon> StartDaemon(const std::string& binary, const std::string& dir, const std::string& name,
                                   std::vector<std::string> args) {
  Daemon d;
  d.log_file = absl::StrCat(dir, "/", name, ".log");
  const std::string port_file = absl::StrCat(dir, "/", name, ".port");
  std::remove(port_file.c_str());
  SubprocessOptions opts;
  opts.binary = binary;
  opts.args = {"--host=127.0.0.1", "--port=0", absl::StrCat("--port_file=", port_file)};
  opts.args.insert(opts.args.end(), args.begin(), args.end());
  opts.log_file = d.log_file;
  auto proc = Subprocess::Start(opts);
  if (!proc.ok()) return proc.status();
  d.process = std::move(proc).value();
  auto port = WaitForPortFile(port_file, absl::Seconds(10), d.process.get());
  if (!port.ok()) return absl::Status(port.status().code(), absl::StrCat(port.status().message(), "\n", d.Log()));
  d.port = *port;
  d.address = absl::StrCat("127.0.0.1:", d.port);
  return d;
}

absl::StatusOr<Daemon> StartServer(const std::string& dir, const std::string& name, std::vector<std::string> args) {
  args.push_back(absl::StrCat("--data_dir=", dir, "/", name, "-data"));
  return StartDaemon(BinaryPath("tessera-server"), dir, name, std::move(args));
}

}  // namespace tessera::testing
