// Trainer: the loop of one stateless tessera-worker.
//
// It registers for a job, then repeatedly leases a chunk of data from the coordinator and either
// trains on it — per mini-batch: pull exactly the parameters the batch needs, compute the
// gradient of the mean loss, push it with the worker's (worker_id, sequence) — or evaluates the
// current model on it. With async consistency the pull of the next batch overlaps the compute of
// the current one and pushes are pipelined; with ssp/bsp each batch first waits for the clock.
// A background thread renews the lease and reports progress; a lost lease abandons the chunk.
// Every RPC has a deadline and transient failures are retried with backoff, so a slow or
// restarting server delays the worker but never hangs it: after `give_up_after` without progress
// the worker stops with an error.
//
// Thread-safety: Run() is called once; stats() may be called from any thread.
#ifndef TESSERA_WORKER_TRAINER_H_
#define TESSERA_WORKER_TRAINER_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/security.h"
#include "tessera/v1/coordinator.pb.h"
#include "worker/data_cache.h"
#include "worker/model/metrics.h"

namespace tessera::worker {

struct TrainerOptions {
  std::string coordinator;
  uint64_t job_id = 0;
  // Stable name of this worker (a restart with the same name takes back its rank).
  std::string name;
  // Compute threads for dense math (OpenBLAS).
  int threads = 1;
  // Fault and test knobs: sleep this long per mini-batch (simulates a slow worker).
  absl::Duration batch_delay = absl::ZeroDuration();
  absl::Duration rpc_timeout = absl::Seconds(10);
  absl::Duration give_up_after = absl::Minutes(5);
  // TLS and bearer token for every RPC; plaintext when null.
  std::shared_ptr<const Security> security;
};

struct TrainerStats {
  uint64_t batches = 0;
  uint64_t examples = 0;
  uint64_t chunks = 0;
  uint64_t eval_chunks = 0;
  uint64_t leases_lost = 0;
};

class Trainer {
 public:
  explicit Trainer(TrainerOptions options);
  ~Trainer();

  // Trains until the coordinator says the job is done. A data error fails the job (with the
  // file:line message) and is returned; so is giving up after repeated failures.
  absl::Status Run();
  TrainerStats stats() const;

 private:
  struct State;
  absl::Status TrainChunk(const tessera::v1::AcquireLeaseResponse& lease, const ChunkData& chunk);
  absl::Status EvalChunk(const ChunkData& chunk, EvalAccumulator* acc);

  const TrainerOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace tessera::worker

#endif  // TESSERA_WORKER_TRAINER_H_
