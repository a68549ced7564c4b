#include "client/coordinator_client.h"

#include <grpcpp/client_context.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/rpc.h"
#include "common/status.h"

namespace tessera::client {

using namespace tessera::v1;  // NOLINT

absl::Status DescribeCoordinatorError(const absl::Status& status, const std::string& address) {
  if (status.ok()) return status;
  if (status.code() == absl::StatusCode::kUnavailable || status.code() == absl::StatusCode::kDeadlineExceeded) {
    std::string why = "not answering";
    const std::string msg(status.message());
    if (absl::StrContains(msg, "onnection refused")) why = "connection refused";
    if (absl::StrContains(msg, "DNS resolution failed") || absl::StrContains(msg, "Name or service not known")) {
      why = "unknown host";
    }
    return absl::UnavailableError(absl::StrCat("cannot reach the coordinator at ", address, " (", why, ")"));
  }
  return status;
}

CoordinatorClient::CoordinatorClient(std::string address, CoordinatorClientOptions options)
    : address_(std::move(address)),
      options_(options),
      stub_(CoordinatorService::NewStub(CreateChannel(address_, ChannelOptions{.security = options_.security}))) {}

template <typename Req, typename Resp, typename Fn>
absl::StatusOr<Resp> CoordinatorClient::Call(const char* what, const Req& req, Fn fn, absl::Duration extra) {
  const absl::Time give_up = absl::Now() + options_.retry_for;
  absl::Duration backoff = absl::Milliseconds(100);
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout + extra));
    Resp resp;
    absl::Status s = FromGrpcStatus(fn(stub_.get(), &ctx, req, &resp));
    if (s.ok()) return resp;
    if (s.code() != absl::StatusCode::kUnavailable || absl::Now() + backoff > give_up) {
      return DescribeCoordinatorError(s, address_);
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

#define TESSERA_CALL(Method, Resp, req) \
  Call<std::decay_t<decltype(req)>, Resp>(#Method, req, [](auto* s, auto* c, const auto& r, auto* o) { return s->Method(c, r, o); })

absl::StatusOr<SubmitJobResponse> CoordinatorClient::SubmitJob(const JobSpec& spec) {
  SubmitJobRequest req;
  *req.mutable_spec() = spec;
  // Submission creates tables on every server: give it time, and never resend it blindly.
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(2)));
  SubmitJobResponse resp;
  absl::Status s = FromGrpcStatus(stub_->SubmitJob(&ctx, req, &resp));
  if (!s.ok()) return DescribeCoordinatorError(s, address_);
  return resp;
}
absl::StatusOr<ListJobsResponse> CoordinatorClient::ListJobs() { return TESSERA_CALL(ListJobs, ListJobsResponse, ListJobsRequest()); }
absl::StatusOr<JobStatus> CoordinatorClient::GetJob(uint64_t job_id) {
  GetJobRequest req;
  req.set_job_id(job_id);
  return TESSERA_CALL(GetJob, JobStatus, req);
}
absl::StatusOr<JobStatus> CoordinatorClient::CancelJob(uint64_t job_id) {
  CancelJobRequest req;
  req.set_job_id(job_id);
  return TESSERA_CALL(CancelJob, JobStatus, req);
}
absl::StatusOr<JobStatus> CoordinatorClient::FailJob(uint64_t job_id, uint64_t worker_id, const std::string& message) {
  FailJobRequest req;
  req.set_job_id(job_id);
  req.set_worker_id(worker_id);
  req.set_message(message);
  return TESSERA_CALL(FailJob, JobStatus, req);
}
absl::StatusOr<ClusterStatusResponse> CoordinatorClient::ClusterStatus() {
  return TESSERA_CALL(ClusterStatus, ClusterStatusResponse, ClusterStatusRequest());
}
absl::StatusOr<ShardMap> CoordinatorClient::GetShardMap() {
  auto r = TESSERA_CALL(GetShardMap, GetShardMapResponse, GetShardMapRequest());
  if (!r.ok()) return r.status();
  return r->shard_map();
}
absl::StatusOr<RegisterWorkerResponse> CoordinatorClient::RegisterWorker(uint64_t job_id, const std::string& name) {
  RegisterWorkerRequest req;
  req.set_job_id(job_id);
  req.set_name(name);
  return TESSERA_CALL(RegisterWorker, RegisterWorkerResponse, req);
}
absl::StatusOr<AcquireLeaseResponse> CoordinatorClient::AcquireLease(uint64_t job_id, uint64_t worker_id) {
  AcquireLeaseRequest req;
  req.set_job_id(job_id);
  req.set_worker_id(worker_id);
  return TESSERA_CALL(AcquireLease, AcquireLeaseResponse, req);
}
absl::StatusOr<RenewLeaseResponse> CoordinatorClient::RenewLease(const RenewLeaseRequest& req) {
  return TESSERA_CALL(RenewLease, RenewLeaseResponse, req);
}
absl::StatusOr<CompleteLeaseResponse> CoordinatorClient::CompleteLease(const CompleteLeaseRequest& req) {
  return TESSERA_CALL(CompleteLease, CompleteLeaseResponse, req);
}
absl::StatusOr<ClockResponse> CoordinatorClient::Clock(const ClockRequest& req) {
  return Call<ClockRequest, ClockResponse>(
      "Clock", req, [](auto* s, auto* c, const auto& r, auto* o) { return s->Clock(c, r, o); },
      absl::Milliseconds(req.timeout_ms()));
}
absl::StatusOr<CheckpointInfo> CoordinatorClient::Checkpoint(uint64_t job_id) {
  CheckpointRequest req;
  req.set_job_id(job_id);
  auto r = Call<CheckpointRequest, CheckpointResponse>(
      "Checkpoint", req, [](auto* s, auto* c, const auto& r, auto* o) { return s->Checkpoint(c, r, o); },
      absl::Minutes(5));
  if (!r.ok()) return r.status();
  return r->checkpoint();
}
absl::StatusOr<CheckpointInfo> CoordinatorClient::Restore(uint64_t job_id, uint64_t checkpoint_id) {
  RestoreRequest req;
  req.set_job_id(job_id);
  req.set_checkpoint_id(checkpoint_id);
  auto r = Call<RestoreRequest, RestoreResponse>(
      "Restore", req, [](auto* s, auto* c, const auto& r, auto* o) { return s->Restore(c, r, o); }, absl::Minutes(5));
  if (!r.ok()) return r.status();
  return r->checkpoint();
}

#undef TESSERA_CALL

namespace {
class CoordinatorShardMaps final : public ShardMapSource {
 public:
  explicit CoordinatorShardMaps(CoordinatorClient* client) : client_(client) {}
  absl::StatusOr<ShardMap> Fetch() override { return client_->GetShardMap(); }

 private:
  CoordinatorClient* client_;
};
}  // namespace

std::unique_ptr<ShardMapSource> CoordinatorClient::ShardMaps() { return std::make_unique<CoordinatorShardMaps>(this); }

}  // namespace tessera::client
