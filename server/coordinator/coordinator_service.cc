#include "server/coordinator/coordinator_service.h"

#include "common/fault.h"
#include "common/status.h"

namespace tessera::coordinator {

using namespace tessera::v1;  // NOLINT

namespace {
// Finishes `ctx` with `result`, copying the value into `resp` when OK.
template <typename T, typename Resp>
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, absl::StatusOr<T> result, Resp* resp) {
  auto* reactor = ctx->DefaultReactor();
  if (result.ok()) *resp = std::move(result).value();
  reactor->Finish(ToGrpcStatus(result.status()));
  return reactor;
}
}  // namespace

CoordinatorServiceImpl::CoordinatorServiceImpl(Coordinator* coordinator, std::shared_ptr<const Security> security,
                                               Metrics* metrics)
    : coordinator_(coordinator), security_(security ? std::move(security) : Security::Insecure()), metrics_(metrics) {}

// Every handler starts with this: a call without the right bearer token ends here.
#define TESSERA_AUTHENTICATE(method)                                                    \
  if (absl::Status auth = security_->CheckToken(*ctx, method, metrics_); !auth.ok()) { \
    auto* denied = ctx->DefaultReactor();                                               \
    denied->Finish(ToGrpcStatus(auth));                                                 \
    return denied;                                                                      \
  }

#define TESSERA_BLOCKING(expr)                                              \
  auto* reactor = ctx->DefaultReactor();                                    \
  blocking_.Schedule([this, reactor, req, resp] {                          \
    auto result = (expr);                                                   \
    if (result.ok()) *resp = std::move(result).value();                     \
    reactor->Finish(ToGrpcStatus(result.status()));                         \
  });                                                                       \
  return reactor

grpc::ServerUnaryReactor* CoordinatorServiceImpl::RegisterServer(Ctx* ctx, const RegisterServerRequest* req,
                                                                 RegisterServerResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/RegisterServer");
  TESSERA_BLOCKING(coordinator_->RegisterServer(*req));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::ServerHeartbeat(Ctx* ctx, const ServerHeartbeatRequest* req,
                                                                  ServerHeartbeatResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/ServerHeartbeat");
  return Reply(ctx, absl::StatusOr<ServerHeartbeatResponse>(coordinator_->ServerHeartbeat(*req)), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::GetShardMap(Ctx* ctx, const GetShardMapRequest*,
                                                              GetShardMapResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/GetShardMap");
  *resp->mutable_shard_map() = coordinator_->GetShardMap();
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::SubmitJob(Ctx* ctx, const SubmitJobRequest* req,
                                                            SubmitJobResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/SubmitJob");
  TESSERA_BLOCKING(coordinator_->SubmitJob(req->spec()));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::ListJobs(Ctx* ctx, const ListJobsRequest*, ListJobsResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/ListJobs");
  return Reply(ctx, absl::StatusOr<ListJobsResponse>(coordinator_->ListJobs()), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::GetJob(Ctx* ctx, const GetJobRequest* req, JobStatus* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/GetJob");
  return Reply(ctx, coordinator_->GetJob(req->job_id()), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::CancelJob(Ctx* ctx, const CancelJobRequest* req, JobStatus* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/CancelJob");
  TESSERA_BLOCKING(coordinator_->CancelJob(req->job_id()));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::RegisterWorker(Ctx* ctx, const RegisterWorkerRequest* req,
                                                                 RegisterWorkerResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/RegisterWorker");
  TESSERA_BLOCKING(coordinator_->RegisterWorker(*req));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::AcquireLease(Ctx* ctx, const AcquireLeaseRequest* req,
                                                               AcquireLeaseResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/AcquireLease");
  if (auto f = TESSERA_FAULT("coordinator.acquire_lease"); f.fired()) {
    return Reply(ctx, absl::StatusOr<AcquireLeaseResponse>(f.status()), resp);
  }
  return Reply(ctx, coordinator_->AcquireLease(*req), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::RenewLease(Ctx* ctx, const RenewLeaseRequest* req,
                                                             RenewLeaseResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/RenewLease");
  return Reply(ctx, coordinator_->RenewLease(*req), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::CompleteLease(Ctx* ctx, const CompleteLeaseRequest* req,
                                                                CompleteLeaseResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/CompleteLease");
  auto r = coordinator_->CompleteLease(*req);
  if (auto f = TESSERA_FAULT("coordinator.complete_lease.after"); r.ok() && f.fired()) {
    r = f.status();
  }
  return Reply(ctx, std::move(r), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::Clock(Ctx* ctx, const ClockRequest* req, ClockResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/Clock");
  auto* reactor = ctx->DefaultReactor();
  coordinator_->Clock(*req, [reactor, resp](absl::StatusOr<ClockResponse> r) {
    if (r.ok()) *resp = std::move(r).value();
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::FailJob(Ctx* ctx, const FailJobRequest* req, JobStatus* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/FailJob");
  TESSERA_BLOCKING(coordinator_->FailJob(*req));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::Checkpoint(Ctx* ctx, const CheckpointRequest* req,
                                                             CheckpointResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/Checkpoint");
  auto* reactor = ctx->DefaultReactor();
  blocking_.Schedule([this, reactor, req, resp] {
    auto r = coordinator_->Checkpoint(req->job_id());
    if (r.ok()) *resp->mutable_checkpoint() = std::move(r).value();
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::Restore(Ctx* ctx, const RestoreRequest* req, RestoreResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/Restore");
  auto* reactor = ctx->DefaultReactor();
  blocking_.Schedule([this, reactor, req, resp] {
    auto r = coordinator_->Restore(req->job_id(), req->checkpoint_id());
    if (r.ok()) *resp->mutable_checkpoint() = std::move(r).value();
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::ClusterStatus(Ctx* ctx, const ClusterStatusRequest*,
                                                                ClusterStatusResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.CoordinatorService/ClusterStatus");
  return Reply(ctx, absl::StatusOr<ClusterStatusResponse>(coordinator_->ClusterStatus()), resp);
}

#undef TESSERA_BLOCKING
#undef TESSERA_AUTHENTICATE

}  // namespace tessera::coordinator
