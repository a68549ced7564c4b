// tessera: the command-line tool for Tessera clusters.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "client/cli.h"
#include "client/demo.h"
#include "client/local_cluster.h"
#include "common/flags.h"
#include "common/rpc.h"
#include "common/security_flags.h"

ABSL_FLAG(std::string, coordinator, "", "Coordinator address (host:port); default: $TESSERA_COORDINATOR, else 127.0.0.1:7000.");
ABSL_FLAG(bool, json, false, "status, jobs, job, submit, checkpoint: print protobuf JSON instead of tables.");
ABSL_FLAG(bool, wait, false, "submit, job: follow progress until the job ends; exit non-zero if it failed.");
ABSL_FLAG(uint64_t, job, 0, "checkpoint, restore: the job id.");
ABSL_FLAG(uint64_t, checkpoint, 0, "restore: the checkpoint id (default: the latest complete one).");
ABSL_FLAG(int, servers, 2, "local: number of tessera-server processes.");
ABSL_FLAG(int, workers, 2, "local: number of tessera-worker processes.");
ABSL_FLAG(std::string, report, "", "local: write a JSON report of the run to this file.");
ABSL_FLAG(std::string, work_dir, "", "local: directory for logs, state and checkpoints (default: a temporary one, removed after a successful run).");
ABSL_FLAG(int, worker_threads, 1, "local: compute threads per worker.");
ABSL_FLAG(std::string, child_log_level, "warn", "local: log level of the child processes.");
ABSL_FLAG(int, positive_class, -1, "convert: write a binary task, label 1 for this class and 0 for the others.");
ABSL_FLAG(uint64_t, limit, 0, "convert: write only the first N examples (0 = all).");

namespace {
constexpr char kUsage[] =
    "the Tessera command-line tool.\n\n"
    "Usage: tessera <command> [args] [flags]\n\n"
    "Commands:\n"
    "  local JOB.json [--servers=N] [--workers=M] [--report=FILE]\n"
    "                   run a whole cluster for one job on this machine and report the result\n"
    "  status           servers, workers and jobs of a cluster (--json for protobuf JSON)\n"
    "  submit JOB.json  submit a job; prints its id (--wait follows it to the end)\n"
    "  jobs             list jobs\n"
    "  job ID           show one job (--wait follows it)\n"
    "  cancel ID        cancel a job\n"
    "  checkpoint --job=ID           checkpoint a job's tables on every server\n"
    "  restore --job=ID [--checkpoint=N]  roll a job back to a complete checkpoint\n"
    "  convert IMAGES LABELS OUT.libsvm [--positive_class=K] [--limit=N]\n"
    "                   turn IDX images (Fashion-MNIST) into a sparse libsvm file\n"
    "  demo             start a server on loopback, push and pull, print what happened\n\n"
    "The coordinator address comes from --coordinator or $TESSERA_COORDINATOR.\n";

int Usage(const char* problem) {
  std::fprintf(stderr, "tessera: %s\n\n%s", problem, kUsage);
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  tessera::BlockShutdownSignals();
  std::vector<std::string> args = tessera::ParseFlags(argc, argv, kUsage);
  if (args.empty()) return Usage("no command given");
  const std::string& cmd = args[0];

  tessera::client::CliOptions o;
  o.coordinator = absl::GetFlag(FLAGS_coordinator);
  if (o.coordinator.empty() && std::getenv("TESSERA_COORDINATOR") != nullptr) o.coordinator = std::getenv("TESSERA_COORDINATOR");
  if (o.coordinator.empty()) o.coordinator = "127.0.0.1:7000";
  o.json = absl::GetFlag(FLAGS_json);
  o.wait = absl::GetFlag(FLAGS_wait);
  o.job_id = absl::GetFlag(FLAGS_job);
  o.checkpoint_id = absl::GetFlag(FLAGS_checkpoint);
  auto security = tessera::Security::Load(tessera::SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::fprintf(stderr, "tessera: %s\n", std::string(security.status().message()).c_str());
    return 2;
  }
  o.security = *security;

  if (cmd == "demo") return tessera::client::RunDemo();
  if (cmd == "convert") {
    return tessera::client::CmdConvert(args, absl::GetFlag(FLAGS_positive_class), absl::GetFlag(FLAGS_limit));
  }
  if (cmd == "status") return tessera::client::CmdStatus(o);
  if (cmd == "jobs") return tessera::client::CmdJobs(o);
  if (cmd == "checkpoint") return tessera::client::CmdCheckpoint(o);
  if (cmd == "restore") return tessera::client::CmdRestore(o);
  if (cmd == "submit") return args.size() == 2 ? tessera::client::CmdSubmit(o, args[1]) : Usage("submit needs a job spec file");
  if (cmd == "job") return args.size() == 2 ? tessera::client::CmdJob(o, args[1]) : Usage("job needs a job id");
  if (cmd == "cancel") return args.size() == 2 ? tessera::client::CmdCancel(o, args[1]) : Usage("cancel needs a job id");
  if (cmd == "local") {
    if (args.size() != 2) return Usage("local needs a job spec file");
    tessera::client::LocalOptions lo;
    lo.spec_path = args[1];
    lo.servers = absl::GetFlag(FLAGS_servers);
    lo.workers = absl::GetFlag(FLAGS_workers);
    lo.report_path = absl::GetFlag(FLAGS_report);
    lo.work_dir = absl::GetFlag(FLAGS_work_dir);
    lo.worker_threads = absl::GetFlag(FLAGS_worker_threads);
    lo.log_level = absl::GetFlag(FLAGS_child_log_level);
    return tessera::client::RunLocal(lo);
  }
  return Usage(("unknown command '" + cmd + "'").c_str());
}
