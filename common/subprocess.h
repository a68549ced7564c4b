// Subprocess: starts a program as a child process, watches it, and stops it by its PID.
// Used by `tessera local`, the benchmarks and the multi-process tests. Children get SIGKILL when
// the parent dies (PR_SET_PDEATHSIG), so a crashed test never leaves daemons behind.
//
// Thread-safety: a Subprocess object is not thread-safe; Start() is safe to call from any thread.
#ifndef TESSERA_COMMON_SUBPROCESS_H_
#define TESSERA_COMMON_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tessera {

struct SubprocessOptions {
  std::string binary;              // path to the executable
  std::vector<std::string> args;   // arguments after argv[0]
  std::string log_file;            // stdout and stderr go here (appended); empty: inherit
  std::vector<std::pair<std::string, std::string>> env;  // added to the parent's environment
  bool kill_with_parent = true;
};

class Subprocess {
 public:
  // Forks and execs. Fails if the binary does not exist or is not executable.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const SubprocessOptions& options);
  // Stops the child (SIGTERM, then SIGKILL after 5 s) if it is still running.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  // True until the child has exited (reaps it when it has).
  bool Running();
  // Sends `sig` to the child.
  void Signal(int sig) const;
  // Waits up to `timeout` for the child to exit; returns its exit code (128 + signal if killed),
  // or nullopt if it is still running.
  std::optional<int> Wait(absl::Duration timeout);
  // SIGTERM, waits up to `grace`, then SIGKILL; returns the exit code.
  int Stop(absl::Duration grace = absl::Seconds(5));
  // The exit code once the child has exited.
  std::optional<int> exit_code() const { return exit_code_; }

 private:
  Subprocess(pid_t pid, std::string name) : pid_(pid), name_(std::move(name)) {}
  pid_t pid_;
  std::string name_;
  std::optional<int> exit_code_;
};

// Waits until `path` holds a port number written by a daemon's --port_file; fails if `process`
// exits first or `timeout` passes.
absl::StatusOr<int> WaitForPortFile(const std::string& path, absl::Duration timeout, Subprocess* process);

// Creates a fresh directory under $TMPDIR (or /tmp) named prefix-XXXXXX and returns its path.
absl::StatusOr<std::string> MakeTempDir(const std::string& prefix);
// Removes a directory tree; errors are ignored.
void RemoveTree(const std::string& path);

}  // namespace tessera

#endif  // TESSERA_COMMON_SUBPROCESS_H_
