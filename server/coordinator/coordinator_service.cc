#include "server/coordinator/coordinator_service.h"

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

CoordinatorServiceImpl::CoordinatorServiceImpl(Coordinator* coordinator) : coordinator_(coordinator) {}

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
  TESSERA_BLOCKING(coordinator_->RegisterServer(*req));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::ServerHeartbeat(Ctx* ctx, const ServerHeartbeatRequest* req,
                                                                  ServerHeartbeatResponse* resp) {
  return Reply(ctx, absl::StatusOr<ServerHeartbeatResponse>(coordinator_->ServerHeartbeat(*req)), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::GetShardMap(Ctx* ctx, const GetShardMapRequest*,
                                                              GetShardMapResponse* resp) {
  *resp->mutable_shard_map() = coordinator_->GetShardMap();
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::SubmitJob(Ctx* ctx, const SubmitJobRequest* req,
                                                            SubmitJobResponse* resp) {
  TESSERA_BLOCKING(coordinator_->SubmitJob(req->spec()));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::ListJobs(Ctx* ctx, const ListJobsRequest*, ListJobsResponse* resp) {
  return Reply(ctx, absl::StatusOr<ListJobsResponse>(coordinator_->ListJobs()), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::GetJob(Ctx* ctx, const GetJobRequest* req, JobStatus* resp) {
  return Reply(ctx, coordinator_->GetJob(req->job_id()), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::CancelJob(Ctx* ctx, const CancelJobRequest* req, JobStatus* resp) {
  TESSERA_BLOCKING(coordinator_->CancelJob(req->job_id()));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::RegisterWorker(Ctx* ctx, const RegisterWorkerRequest* req,
                                                                 RegisterWorkerResponse* resp) {
  TESSERA_BLOCKING(coordinator_->RegisterWorker(*req));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::AcquireLease(Ctx* ctx, const AcquireLeaseRequest* req,
                                                               AcquireLeaseResponse* resp) {
  return Reply(ctx, coordinator_->AcquireLease(*req), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::RenewLease(Ctx* ctx, const RenewLeaseRequest* req,
                                                             RenewLeaseResponse* resp) {
  return Reply(ctx, coordinator_->RenewLease(*req), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::CompleteLease(Ctx* ctx, const CompleteLeaseRequest* req,
                                                                CompleteLeaseResponse* resp) {
  return Reply(ctx, coordinator_->CompleteLease(*req), resp);
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::Clock(Ctx* ctx, const ClockRequest* req, ClockResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  coordinator_->Clock(*req, [reactor, resp](absl::StatusOr<ClockResponse> r) {
    if (r.ok()) *resp = std::move(r).value();
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::FailJob(Ctx* ctx, const FailJobRequest* req, JobStatus* resp) {
  TESSERA_BLOCKING(coordinator_->FailJob(*req));
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::Checkpoint(Ctx* ctx, const CheckpointRequest* req,
                                                             CheckpointResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  blocking_.Schedule([this, reactor, req, resp] {
    auto r = coordinator_->Checkpoint(req->job_id());
    if (r.ok()) *resp->mutable_checkpoint() = std::move(r).value();
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorServiceImpl::Restore(Ctx* ctx, const RestoreRequest* req, RestoreResponse* resp) {
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
  return Reply(ctx, absl::StatusOr<ClusterStatusResponse>(coordinator_->ClusterStatus()), resp);
}

#undef TESSERA_BLOCKING

}  // namespace tessera::coordinator
