// ParameterServiceImpl: the gRPC edge of a shard. Each RPC converts its request into a ShardStore
// call on the gRPC callback thread (the store never blocks on I/O) and finishes the reactor at once;
// absl errors become gRPC statuses here, with the shard-map version in trailing metadata on
// FAILED_PRECONDITION. Thread-safe.
#ifndef TESSERA_SERVER_PARAMETER_SERVICE_H_
#define TESSERA_SERVER_PARAMETER_SERVICE_H_

#include <functional>

#include "common/security.h"
#include "common/thread_pool.h"
#include "server/shard_store.h"
#include "tessera/v1/parameter.grpc.pb.h"

namespace tessera::server {

// Hooks for the checkpoint RPCs, implemented by the checkpoint code; unset hooks answer UNIMPLEMENTED.
struct CheckpointHooks {
  std::function<absl::StatusOr<tessera::v1::SaveCheckpointResponse>(const tessera::v1::SaveCheckpointRequest&)> save;
  std::function<absl::StatusOr<tessera::v1::LoadCheckpointResponse>(const tessera::v1::LoadCheckpointRequest&)> load;
};

class ParameterServiceImpl final : public tessera::v1::ParameterService::CallbackService {
 public:
  // `store` (and `metrics`, when given) must outlive the service. `security` (may be null) says
  // which bearer token calls must carry.
  ParameterServiceImpl(ShardStore* store, CheckpointHooks hooks = {}, std::shared_ptr<const Security> security = nullptr,
                       Metrics* metrics = nullptr);

  grpc::ServerUnaryReactor* CreateTable(grpc::CallbackServerContext* ctx, const tessera::v1::CreateTableRequest* req,
                                        tessera::v1::CreateTableResponse* resp) override;
  grpc::ServerUnaryReactor* DropTables(grpc::CallbackServerContext* ctx, const tessera::v1::DropTablesRequest* req,
                                       tessera::v1::DropTablesResponse* resp) override;
  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* ctx, const tessera::v1::PullRequest* req,
                                 tessera::v1::PullResponse* resp) override;
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* ctx, const tessera::v1::PushRequest* req,
                                 tessera::v1::PushResponse* resp) override;
  grpc::ServerUnaryReactor* PushPull(grpc::CallbackServerContext* ctx, const tessera::v1::PushPullRequest* req,
                                     tessera::v1::PushPullResponse* resp) override;
  grpc::ServerUnaryReactor* UpdateShardMap(grpc::CallbackServerContext* ctx,
                                           const tessera::v1::UpdateShardMapRequest* req,
                                           tessera::v1::UpdateShardMapResponse* resp) override;
  grpc::ServerUnaryReactor* ServerStatus(grpc::CallbackServerContext* ctx, const tessera::v1::ServerStatusRequest* req,
                                         tessera::v1::ServerStatusResponse* resp) override;
  grpc::ServerUnaryReactor* SaveCheckpoint(grpc::CallbackServerContext* ctx,
                                           const tessera::v1::SaveCheckpointRequest* req,
                                           tessera::v1::SaveCheckpointResponse* resp) override;
  grpc::ServerUnaryReactor* LoadCheckpoint(grpc::CallbackServerContext* ctx,
                                           const tessera::v1::LoadCheckpointRequest* req,
                                           tessera::v1::LoadCheckpointResponse* resp) override;

 private:
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, const absl::Status& status);

  ShardStore* const store_;
  const CheckpointHooks hooks_;
  // Checkpoint saves and loads take seconds: they run here, not on gRPC's callback threads.
  ThreadPool checkpoint_pool_{1};
  const std::shared_ptr<const Security> security_;
  Metrics* const metrics_;
};

// Request -> store argument conversions, shared with tests.
PullArgs ToPullArgs(const tessera::v1::PullRequest& req);
PushArgs ToPushArgs(const tessera::v1::PushRequest& req);

}  // namespace tessera::server

#endif  // TESSERA_SERVER_PARAMETER_SERVICE_H_
