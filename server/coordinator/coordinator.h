// Coordinator: the control plane of a Tessera cluster, independent of gRPC.
//
// It keeps membership (servers register and heartbeat; a server that misses heartbeats for
// `heartbeat_timeout` is shown dead; a restarted server gets its shard id back), the versioned shard
// map, the jobs (validated specs, their tables, data chunks, leases, progress, evaluations,
// checkpoints) and the SSP/BSP training clocks. Its state survives kill -9: every change is written
// to `state_dir` as a checksummed snapshot (synchronously for submissions and membership, within
// ~50 ms for leases and progress; a lost lease grant only means a chunk is handed out again).
//
// Leases: each epoch's chunks are shuffled (seeded); a worker asks for the next chunk and gets one,
// WAIT (epoch barrier or evaluation running) or DONE. A lease not renewed within `lease_timeout`
// returns to the queue. With bsp, chunk position p of an epoch belongs to rank p % num_workers, so
// runs are reproducible.
//
// Clocks: a worker's clock is the number of mini-batches it finished in the current epoch. Only
// workers that still have work in the epoch take part; with ssp(s) a worker may compute batch c
// once every participant reached c - s; bsp is s = 0 plus pushes in rank order within a clock.
//
// Thread-safety: all methods are thread-safe. Methods documented "may block" call servers through
// the ServerFleet and must not run on gRPC callback threads; the others only take the state lock.
// Callbacks passed in are never run while the lock is held.
#ifndef TESSERA_SERVER_COORDINATOR_COORDINATOR_H_
#define TESSERA_SERVER_COORDINATOR_COORDINATOR_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/partition.h"
#include "server/coordinator/server_fleet.h"
#include "tessera/v1/coordinator.pb.h"

namespace tessera::coordinator {

struct CoordinatorOptions {
  // Directory for the state snapshot; empty keeps state in memory only (tests).
  std::string state_dir;
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration heartbeat_timeout = absl::Seconds(5);
  absl::Duration lease_timeout = absl::Seconds(10);
  uint32_t virtual_nodes = kDefaultVirtualNodes;
};

// Counters the metrics endpoint exports.
struct CoordinatorCounters {
  uint64_t leases_granted = 0;
  uint64_t leases_expired = 0;
  uint64_t jobs_submitted = 0;
  uint64_t heartbeats = 0;
};

class Coordinator {
 public:
  // Loads the state from options.state_dir (if any). DATA_LOSS if the snapshot is corrupt.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Open(CoordinatorOptions options,
                                                           std::unique_ptr<ServerFleet> fleet);
  ~Coordinator();

  // ---- Servers. RegisterServer may block (it pushes the new map to the other servers).
  absl::StatusOr<tessera::v1::RegisterServerResponse> RegisterServer(const tessera::v1::RegisterServerRequest& req);
  tessera::v1::ServerHeartbeatResponse ServerHeartbeat(const tessera::v1::ServerHeartbeatRequest& req);
  tessera::v1::ShardMap GetShardMap() const;

  // ---- Jobs. SubmitJob may block (it creates the job's tables on every server).
  absl::StatusOr<tessera::v1::SubmitJobResponse> SubmitJob(tessera::v1::JobSpec spec);
  tessera::v1::ListJobsResponse ListJobs() const;
  absl::StatusOr<tessera::v1::JobStatus> GetJob(uint64_t job_id) const;
  absl::StatusOr<tessera::v1::JobStatus> CancelJob(uint64_t job_id);
  absl::StatusOr<tessera::v1::JobStatus> FailJob(const tessera::v1::FailJobRequest& req);

  // ---- Workers.
  absl::StatusOr<tessera::v1::RegisterWorkerResponse> RegisterWorker(const tessera::v1::RegisterWorkerRequest& req);
  absl::StatusOr<tessera::v1::AcquireLeaseResponse> AcquireLease(const tessera::v1::AcquireLeaseRequest& req);
  absl::StatusOr<tessera::v1::RenewLeaseResponse> RenewLease(const tessera::v1::RenewLeaseRequest& req);
  absl::StatusOr<tessera::v1::CompleteLeaseResponse> CompleteLease(const tessera::v1::CompleteLeaseRequest& req);
  // Records the worker's clock and calls `done` once it may proceed, or with granted = false when
  // req.timeout_ms passes first. `done` runs on the caller's thread or on the Tick() thread.
  void Clock(const tessera::v1::ClockRequest& req, std::function<void(absl::StatusOr<tessera::v1::ClockResponse>)> done);

  // ---- Checkpoints (may block: every shard writes its part).
  absl::StatusOr<tessera::v1::CheckpointInfo> Checkpoint(uint64_t job_id);
  absl::StatusOr<tessera::v1::CheckpointInfo> Restore(uint64_t job_id, uint64_t checkpoint_id);

  tessera::v1::ClusterStatusResponse ClusterStatus() const;
  CoordinatorCounters counters() const;

  // Housekeeping, called every ~100 ms by the daemon: liveness, lease expiry, clock-wait timeouts,
  // periodic checkpoints (may block), and writing the snapshot when it is dirty.
  void Tick();
  // Writes the snapshot now if anything changed.
  absl::Status Flush();

 private:
  struct ClockWaiter {
    tessera::v1::ClockRequest request;
    absl::Time deadline;
    std::function<void(absl::StatusOr<tessera::v1::ClockResponse>)> done;
  };
  // In-memory companions of a JobRecord that need not survive a restart.
  struct JobRuntime {
    // Current-epoch clock of each participating worker.
    absl::flat_hash_map<uint64_t, uint64_t> clocks;
    // bsp: batches each worker has pulled the parameters for (a push of clock c waits until every
    // participant pulled c, so nobody computes batch c on an update of batch c).
    absl::flat_hash_map<uint64_t, uint64_t> pulled;
    // Workers that have no more chunks in the current epoch.
    absl::flat_hash_map<uint64_t, bool> idle;
    std::vector<ClockWaiter> waiters;
    std::deque<std::pair<absl::Time, uint64_t>> rate_samples;  // (time, examples_done)
    // Applied pushes of this job's tables per shard at the last heartbeat.
    absl::flat_hash_map<uint32_t, uint64_t> applied_pushes;
  };
  struct ServerRuntime {
    absl::Time last_heartbeat;
    bool alive = false;
    tessera::v1::ServerStatusResponse status;
  };
  using Callbacks = std::vector<std::function<void()>>;

  Coordinator(CoordinatorOptions options, std::unique_ptr<ServerFleet> fleet);
  absl::Status Load();

  tessera::v1::JobRecord* FindJob(uint64_t job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  tessera::v1::WorkerRecord* FindWorker(tessera::v1::JobRecord& job, uint64_t worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  tessera::v1::ShardMap BuildShardMap() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void BumpShardMap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkDirty(bool sync) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WriteSnapshot() ABSL_LOCKS_EXCLUDED(mu_);
  void FillStatus(const tessera::v1::JobRecord& job, tessera::v1::JobStatus* out) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool JobOver(const tessera::v1::JobRecord& job) const;
  void FinishJob(tessera::v1::JobRecord& job, tessera::v1::JobState state, const std::string& message,
                 Callbacks* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartEpoch(tessera::v1::JobRecord& job, uint32_t epoch, Callbacks* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartEval(tessera::v1::JobRecord& job, uint32_t epoch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the job forward when every chunk of the current phase is done.
  void Advance(tessera::v1::JobRecord& job, Callbacks* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddProgress(tessera::v1::JobRecord& job, tessera::v1::WorkerRecord* worker, const tessera::v1::Progress& p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLease(tessera::v1::JobRecord& job, size_t lease_index, bool done, Callbacks* wake)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Clock logic: whether `req` may proceed now; fills the response.
  bool ClockGranted(tessera::v1::JobRecord& job, const tessera::v1::ClockRequest& req,
                    tessera::v1::ClockResponse* resp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-checks the clock waiters of `job`; satisfied ones are moved into `wake`.
  void WakeClockWaiters(tessera::v1::JobRecord& job, Callbacks* wake) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WorkerAlive(const tessera::v1::WorkerRecord& w, absl::Time now) const;
  static void Run(Callbacks& callbacks);

  const CoordinatorOptions options_;
  const std::unique_ptr<ServerFleet> fleet_;
  const absl::Time started_;

  mutable absl::Mutex mu_;
  tessera::v1::CoordinatorState state_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ServerRuntime> servers_ ABSL_GUARDED_BY(mu_);  // by server_id
  std::map<uint64_t, JobRuntime> jobs_ ABSL_GUARDED_BY(mu_);           // by job id
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  CoordinatorCounters counters_ ABSL_GUARDED_BY(mu_);
  absl::Mutex write_mu_;  // serializes snapshot writes
};

}  // namespace tessera::coordinator

#endif  // TESSERA_SERVER_COORDINATOR_COORDINATOR_H_
