#include "server/coordinator/server_fleet.h"

#include <grpcpp/client_context.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/rpc.h"
#include "common/status.h"
#include "tessera/v1/parameter.grpc.pb.h"

namespace tessera::coordinator {
namespace {

using tessera::v1::ParameterService;

class GrpcServerFleet final : public ServerFleet {
 public:
  GrpcServerFleet(absl::Duration timeout, std::shared_ptr<const Security> security)
      : timeout_(timeout), security_(std::move(security)) {}

  absl::Status CreateTable(const std::string& address, const tessera::v1::TableSpec& spec) override {
    tessera::v1::CreateTableRequest req;
    *req.mutable_spec() = spec;
    tessera::v1::CreateTableResponse resp;
    return Call(address, [&](ParameterService::Stub* s, grpc::ClientContext* c) { return s->CreateTable(c, req, &resp); });
  }
  absl::Status DropTables(const std::string& address, const std::string& prefix) override {
    tessera::v1::DropTablesRequest req;
    req.set_prefix(prefix);
    tessera::v1::DropTablesResponse resp;
    return Call(address, [&](ParameterService::Stub* s, grpc::ClientContext* c) { return s->DropTables(c, req, &resp); });
  }
  absl::Status UpdateShardMap(const std::string& address, const tessera::v1::ShardMap& map,
                              uint32_t shard_id) override {
    tessera::v1::UpdateShardMapRequest req;
    *req.mutable_shard_map() = map;
    req.set_shard_id(shard_id);
    tessera::v1::UpdateShardMapResponse resp;
    return Call(address,
                [&](ParameterService::Stub* s, grpc::ClientContext* c) { return s->UpdateShardMap(c, req, &resp); });
  }
  absl::StatusOr<tessera::v1::SaveCheckpointResponse> SaveCheckpoint(
      const std::string& address, const tessera::v1::SaveCheckpointRequest& req) override {
    tessera::v1::SaveCheckpointResponse resp;
    RETURN_IF_ERROR(
        Call(address, [&](ParameterService::Stub* s, grpc::ClientContext* c) { return s->SaveCheckpoint(c, req, &resp); }));
    return resp;
  }
  absl::StatusOr<tessera::v1::LoadCheckpointResponse> LoadCheckpoint(
      const std::string& address, const tessera::v1::LoadCheckpointRequest& req) override {
    tessera::v1::LoadCheckpointResponse resp;
    RETURN_IF_ERROR(
        Call(address, [&](ParameterService::Stub* s, grpc::ClientContext* c) { return s->LoadCheckpoint(c, req, &resp); }));
    return resp;
  }

 private:
  template <typename Fn>
  absl::Status Call(const std::string& address, Fn fn) {
    ParameterService::Stub* stub;
    {
      absl::MutexLock lock(&mu_);
      auto& s = stubs_[address];
      if (s == nullptr) s = ParameterService::NewStub(CreateChannel(address, ChannelOptions{.security = security_}));
      stub = s.get();
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
    return Annotate(FromGrpcStatus(fn(stub, &ctx)), absl::StrCat("server ", address));
  }

  const absl::Duration timeout_;
  const std::shared_ptr<const Security> security_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<ParameterService::Stub>> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<ServerFleet> NewGrpcServerFleet(absl::Duration rpc_timeout, std::shared_ptr<const Security> security) {
  return std::make_unique<GrpcServerFleet>(rpc_timeout, std::move(security));
}

}  // namespace tessera::coordinator
