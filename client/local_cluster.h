// `tessera local`: a whole cluster for one job on this machine — a coordinator, N servers and M
// workers as child processes on loopback (free ports) — that submits the job, shows live
// progress, prints the final evaluation, writes a JSON report and stops everything cleanly
// (on Ctrl-C too). The embedded default a new user runs first.
#ifndef TESSERA_CLIENT_LOCAL_CLUSTER_H_
#define TESSERA_CLIENT_LOCAL_CLUSTER_H_

#include <string>

namespace tessera::client {

struct LocalOptions {
  std::string spec_path;
  int servers = 2;
  int workers = 2;
  std::string report_path;  // empty: no report file
  // Where logs, state and checkpoints go; empty: a temporary directory removed afterwards unless
  // the job failed.
  std::string work_dir;
  int worker_threads = 1;
  std::string log_level = "warn";  // of the child processes
};

// Returns the process exit code: 0 when the job succeeded, 1 when it failed, 2 for usage errors,
// 130 when interrupted.
int RunLocal(const LocalOptions& options);

}  // namespace tessera::client

#endif  // TESSERA_CLIENT_LOCAL_CLUSTER_H_
