// The `tessera` command-line tool's commands that talk to a running cluster. Each returns the
// process exit code and prints results to stdout, errors as one line on stderr.
#ifndef TESSERA_CLIENT_CLI_H_
#define TESSERA_CLIENT_CLI_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "common/security.h"
#include "tessera/v1/coordinator.pb.h"

namespace tessera::client {

struct CliOptions {
  std::string coordinator;  // host:port
  bool json = false;
  bool wait = false;
  uint64_t checkpoint_id = 0;
  uint64_t job_id = 0;
  std::shared_ptr<const Security> security;
};

int CmdStatus(const CliOptions& o);
int CmdSubmit(const CliOptions& o, const std::string& spec_path);
int CmdJobs(const CliOptions& o);
int CmdJob(const CliOptions& o, const std::string& id);
int CmdCancel(const CliOptions& o, const std::string& id);
int CmdCheckpoint(const CliOptions& o);
int CmdRestore(const CliOptions& o);
// tessera convert IMAGES LABELS OUT: IDX images (e.g. Fashion-MNIST) to a sparse libsvm file.
int CmdConvert(const std::vector<std::string>& args, int positive_class, uint64_t limit);

// Human-readable renderings, shared with `tessera local`.
std::string FormatClusterStatus(const tessera::v1::ClusterStatusResponse& st, const std::string& coordinator);
std::string FormatJob(const tessera::v1::JobStatus& job);
// One progress line: "epoch 2/5  chunk 7/12  41,234 ex/s  loss 0.4123  ETA 0:12".
std::string ProgressLine(const tessera::v1::JobStatus& job, absl::Duration elapsed);
std::string HumanBytes(uint64_t bytes);

}  // namespace tessera::client

#endif  // TESSERA_CLIENT_CLI_H_
