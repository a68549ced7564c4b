// tessera-worker: a stateless training worker for one job.
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/rpc.h"
#include "common/security_flags.h"
#include "worker/model/blas.h"
#include "worker/trainer.h"

ABSL_FLAG(std::string, coordinator, "", "Coordinator address (host:port); default: $TESSERA_COORDINATOR.");
ABSL_FLAG(uint64_t, job, 0, "Id of the job to work on (see `tessera submit`).");
ABSL_FLAG(std::string, worker_id, "", "Stable name of this worker; a worker restarted under the same name takes back its rank. Default: <hostname>-<pid>.");
ABSL_FLAG(int, threads, 1, "Compute threads for dense math.");
ABSL_FLAG(absl::Duration, give_up_after, absl::Minutes(5), "Stop with an error after this long without finishing a chunk (servers or coordinator unreachable).");
ABSL_FLAG(absl::Duration, batch_delay, absl::ZeroDuration(), "Testing: sleep this long per mini-batch to simulate a slow worker.");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error or off.");

int main(int argc, char** argv) {
  // OpenBLAS picks its kernels when it loads; when it misjudges this CPU, start again with the
  // right ones (the mlp gets several times faster). Done once: the variable is set for the re-exec.
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    const std::string core = tessera::worker::RecommendedBlasCoreType();
    if (!core.empty()) {
      setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
      char self[4096];
      const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
      if (n > 0) {
        self[n] = '\0';
        execv(self, argv);  // returns only on failure; then carry on with the slow kernels
      }
    }
  }
  tessera::BlockShutdownSignals();
  tessera::ParseFlags(argc, argv,
                      "a stateless Tessera training worker.\n"
                      "Registers for a job, leases data chunks from the coordinator, pulls parameters, computes\n"
                      "gradients and pushes them to the servers until the job is done.\n\n"
                      "Usage: tessera-worker --coordinator=HOST:PORT --job=ID [--worker_id=NAME] [--threads=N]");
  if (auto s = tessera::SetupLogging("worker", absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    std::fprintf(stderr, "tessera-worker: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  tessera::worker::TrainerOptions o;
  o.coordinator = absl::GetFlag(FLAGS_coordinator);
  if (o.coordinator.empty() && std::getenv("TESSERA_COORDINATOR") != nullptr) o.coordinator = std::getenv("TESSERA_COORDINATOR");
  o.job_id = absl::GetFlag(FLAGS_job);
  if (o.coordinator.empty() || o.job_id == 0) {
    std::fprintf(stderr, "tessera-worker: --coordinator (or $TESSERA_COORDINATOR) and --job are required\n");
    return 2;
  }
  o.name = absl::GetFlag(FLAGS_worker_id);
  if (o.name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    o.name = absl::StrCat(host, "-", getpid());
  }
  o.threads = absl::GetFlag(FLAGS_threads);
  if (auto f = tessera::ConfigureFaultsFromFlagsAndEnv(); !f.ok()) {
    std::fprintf(stderr, "tessera-worker: --faults: %s\n", std::string(f.message()).c_str());
    return 2;
  }
  auto security = tessera::Security::Load(tessera::SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::fprintf(stderr, "tessera-worker: %s\n", std::string(security.status().message()).c_str());
    return 2;
  }
  o.security = *security;
  if (const std::string w = tessera::worker::BlasCoreWarning(); !w.empty()) spdlog::warn("{}", w);
  spdlog::info("OpenBLAS kernels: {}", tessera::worker::BlasCoreName());
  o.give_up_after = absl::GetFlag(FLAGS_give_up_after);
  o.batch_delay = absl::GetFlag(FLAGS_batch_delay);

  tessera::worker::Trainer trainer(o);
  // SIGTERM / Ctrl-C: stop at once; the coordinator hands our lease to another worker.
  std::thread([] {
    const int sig = tessera::WaitForShutdownSignal();
    spdlog::info("signal {}: stopping", sig);
    std::_Exit(128 + sig);
  }).detach();
  absl::Status s = trainer.Run();
  if (!s.ok()) {
    spdlog::error("{}", s);
    return 1;
  }
  return 0;
}
