// CoordinatorServiceImpl: the gRPC edge of the coordinator. Quick handlers answer on the callback
// thread; handlers that may block (fan-out to servers, fsync of the state) run on a small thread
// pool and finish their reactor from there; Clock waits are parked in the coordinator and answered
// when the clock allows or the wait times out, holding no thread meanwhile. Thread-safe.
#ifndef TESSERA_SERVER_COORDINATOR_COORDINATOR_SERVICE_H_
#define TESSERA_SERVER_COORDINATOR_COORDINATOR_SERVICE_H_

#include "common/security.h"
#include "common/thread_pool.h"
#include "server/coordinator/coordinator.h"
#include "tessera/v1/coordinator.grpc.pb.h"

namespace tessera::coordinator {

class CoordinatorServiceImpl final : public tessera::v1::CoordinatorService::CallbackService {
 public:
  // `coordinator` (and `metrics`, when given) must outlive the service.
  explicit CoordinatorServiceImpl(Coordinator* coordinator, std::shared_ptr<const Security> security = nullptr,
                                  Metrics* metrics = nullptr);

  using Ctx = grpc::CallbackServerContext;
  grpc::ServerUnaryReactor* RegisterServer(Ctx*, const tessera::v1::RegisterServerRequest*,
                                           tessera::v1::RegisterServerResponse*) override;
  grpc::ServerUnaryReactor* ServerHeartbeat(Ctx*, const tessera::v1::ServerHeartbeatRequest*,
                                            tessera::v1::ServerHeartbeatResponse*) override;
  grpc::ServerUnaryReactor* GetShardMap(Ctx*, const tessera::v1::GetShardMapRequest*,
                                        tessera::v1::GetShardMapResponse*) override;
  grpc::ServerUnaryReactor* SubmitJob(Ctx*, const tessera::v1::SubmitJobRequest*, tessera::v1::SubmitJobResponse*) override;
  grpc::ServerUnaryReactor* ListJobs(Ctx*, const tessera::v1::ListJobsRequest*, tessera::v1::ListJobsResponse*) override;
  grpc::ServerUnaryReactor* GetJob(Ctx*, const tessera::v1::GetJobRequest*, tessera::v1::JobStatus*) override;
  grpc::ServerUnaryReactor* CancelJob(Ctx*, const tessera::v1::CancelJobRequest*, tessera::v1::JobStatus*) override;
  grpc::ServerUnaryReactor* RegisterWorker(Ctx*, const tessera::v1::RegisterWorkerRequest*,
                                           tessera::v1::RegisterWorkerResponse*) override;
  grpc::ServerUnaryReactor* AcquireLease(Ctx*, const tessera::v1::AcquireLeaseRequest*,
                                         tessera::v1::AcquireLeaseResponse*) override;
  grpc::ServerUnaryReactor* RenewLease(Ctx*, const tessera::v1::RenewLeaseRequest*,
                                       tessera::v1::RenewLeaseResponse*) override;
  grpc::ServerUnaryReactor* CompleteLease(Ctx*, const tessera::v1::CompleteLeaseRequest*,
                                          tessera::v1::CompleteLeaseResponse*) override;
  grpc::ServerUnaryReactor* Clock(Ctx*, const tessera::v1::ClockRequest*, tessera::v1::ClockResponse*) override;
  grpc::ServerUnaryReactor* FailJob(Ctx*, const tessera::v1::FailJobRequest*, tessera::v1::JobStatus*) override;
  grpc::ServerUnaryReactor* Checkpoint(Ctx*, const tessera::v1::CheckpointRequest*,
                                       tessera::v1::CheckpointResponse*) override;
  grpc::ServerUnaryReactor* Restore(Ctx*, const tessera::v1::RestoreRequest*, tessera::v1::RestoreResponse*) override;
  grpc::ServerUnaryReactor* ClusterStatus(Ctx*, const tessera::v1::ClusterStatusRequest*,
                                          tessera::v1::ClusterStatusResponse*) override;

 private:
  Coordinator* const coordinator_;
  const std::shared_ptr<const Security> security_;
  Metrics* const metrics_;
  ThreadPool blocking_{4};
};

}  // namespace tessera::coordinator

#endif  // TESSERA_SERVER_COORDINATOR_COORDINATOR_SERVICE_H_
