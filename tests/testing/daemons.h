// Test helpers that start real Tessera daemons from the build tree on loopback with port 0.
// Every process is stopped (by PID) when its handle is destroyed.
#ifndef TESSERA_TESTS_TESTING_DAEMONS_H_
#define TESSERA_TESTS_TESTING_DAEMONS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/subprocess.h"

namespace tessera::testing {

// Path of a binary built by this project (tessera-server, tessera, ...).
std::string BinaryPath(const std::string& name);

// A temporary directory removed on destruction (kept when TESSERA_KEEP_TEST_DIRS is set).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct Daemon {
  std::unique_ptr<Subprocess> process;
  int port = 0;
  std::string address;  // 127.0.0.1:port
  std::string log_file;
  // Returns the daemon's log (for failure messages).
  std::string Log() const;
};

// Starts `binary` with --host=127.0.0.1 --port=0 --port_file=... plus `args`, and waits (10 s at
// most) until it is listening. `name` names the log and port files inside `dir`.
absl::StatusOr<Daemon> StartDaemon(const std::string& binary, const std::string& dir, const std::string& name,
                                   std::vector<std::string> args = {});

// Starts a tessera-server with its own data directory under `dir`.
absl::StatusOr<Daemon> StartServer(const std::string& dir, const std::string& name,
                                   std::vector<std::string> args = {});

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_TESTING_DAEMONS_H_
