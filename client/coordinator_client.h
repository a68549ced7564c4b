// CoordinatorClient: blocking calls to tessera-coordinator with a deadline on every attempt and
// retries with backoff for transient failures (coordinator restarting). Used by the CLI and workers.
// Thread-safe.
#ifndef TESSERA_CLIENT_COORDINATOR_CLIENT_H_
#define TESSERA_CLIENT_COORDINATOR_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/shard_map_source.h"
#include "common/security.h"
#include "tessera/v1/coordinator.grpc.pb.h"

namespace tessera::client {

struct CoordinatorClientOptions {
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Keep retrying UNAVAILABLE / DEADLINE_EXCEEDED this long before giving up.
  absl::Duration retry_for = absl::Seconds(60);
  // TLS and bearer token; plaintext when null.
  std::shared_ptr<const Security> security;
};

class CoordinatorClient {
 public:
  CoordinatorClient(std::string address, CoordinatorClientOptions options = {});

  const std::string& address() const { return address_; }

  absl::StatusOr<tessera::v1::SubmitJobResponse> SubmitJob(const tessera::v1::JobSpec& spec);
  absl::StatusOr<tessera::v1::ListJobsResponse> ListJobs();
  absl::StatusOr<tessera::v1::JobStatus> GetJob(uint64_t job_id);
  absl::StatusOr<tessera::v1::JobStatus> CancelJob(uint64_t job_id);
  absl::StatusOr<tessera::v1::JobStatus> FailJob(uint64_t job_id, uint64_t worker_id, const std::string& message);
  absl::StatusOr<tessera::v1::ClusterStatusResponse> ClusterStatus();
  absl::StatusOr<tessera::v1::ShardMap> GetShardMap();
  absl::StatusOr<tessera::v1::RegisterWorkerResponse> RegisterWorker(uint64_t job_id, const std::string& name);
  absl::StatusOr<tessera::v1::AcquireLeaseResponse> AcquireLease(uint64_t job_id, uint64_t worker_id);
  absl::StatusOr<tessera::v1::RenewLeaseResponse> RenewLease(const tessera::v1::RenewLeaseRequest& req);
  absl::StatusOr<tessera::v1::CompleteLeaseResponse> CompleteLease(const tessera::v1::CompleteLeaseRequest& req);
  // Waits on the coordinator up to req.timeout_ms (plus the RPC deadline).
  absl::StatusOr<tessera::v1::ClockResponse> Clock(const tessera::v1::ClockRequest& req);
  absl::StatusOr<tessera::v1::CheckpointInfo> Checkpoint(uint64_t job_id);
  absl::StatusOr<tessera::v1::CheckpointInfo> Restore(uint64_t job_id, uint64_t checkpoint_id);

  // A shard map source backed by this coordinator (for KvClient).
  std::unique_ptr<ShardMapSource> ShardMaps();

 private:
  template <typename Req, typename Resp, typename Fn>
  absl::StatusOr<Resp> Call(const char* what, const Req& req, Fn fn, absl::Duration extra_deadline = absl::ZeroDuration());

  const std::string address_;
  const CoordinatorClientOptions options_;
  std::unique_ptr<tessera::v1::CoordinatorService::Stub> stub_;
};

// Rewrites an error from talking to the coordinator as one readable line.
absl::Status DescribeCoordinatorError(const absl::Status& status, const std::string& address);

}  // namespace tessera::client

#endif  // TESSERA_CLIENT_COORDINATOR_CLIENT_H_
