// ParameterServiceImpl: the gRPC edge of a shard. Each RPC converts its request into a ShardStore
// call on the gRPC callback thread (the store never blocks on I/O) and finishes the reactor at once;
// absl errors become gRPC statuses here, with the shard-map version in trailing metadata on
// FAILED_PRECONDITION. Thread-safe.
//
// The data path (Pull, Push, PushPull) takes raw byte buffers and uses common/wire.h instead of
// the protobuf classes: keys and gradients are read where gRPC received them (or copied once when
// a field is split across slices), and pulled values are written by the store straight into the
// response. The bytes on the wire are the same protobuf messages, so protobuf clients still work.
#ifndef TESSERA_SERVER_PARAMETER_SERVICE_H_
#define TESSERA_SERVER_PARAMETER_SERVICE_H_

#include <grpcpp/support/byte_buffer.h>

#include <functional>

#include "common/security.h"
#include "common/thread_pool.h"
#include "common/wire.h"
#include "server/shard_store.h"
#include "tessera/v1/parameter.grpc.pb.h"

namespace tessera::server {

// Hooks for the checkpoint RPCs, implemented by the checkpoint code; unset hooks answer UNIMPLEMENTED.
struct CheckpointHooks {
  std::function<absl::StatusOr<tessera::v1::SaveCheckpointResponse>(const tessera::v1::SaveCheckpointRequest&)> save;
  std::function<absl::StatusOr<tessera::v1::LoadCheckpointResponse>(const tessera::v1::LoadCheckpointRequest&)> load;
};

// Callback service with the three data-path methods raw (grpc::ByteBuffer in and out).
using ParameterServiceBase = tessera::v1::ParameterService::WithRawCallbackMethod_Pull<
    tessera::v1::ParameterService::WithRawCallbackMethod_Push<
        tessera::v1::ParameterService::WithRawCallbackMethod_PushPull<tessera::v1::ParameterService::CallbackService>>>;

class ParameterServiceImpl final : public ParameterServiceBase {
 public:
  // `store` (and `metrics`, when given) must outlive the service. `security` (may be null) says
  // which bearer token calls must carry.
  ParameterServiceImpl(ShardStore* store, CheckpointHooks hooks = {}, std::shared_ptr<const Security> security = nullptr,
                       Metrics* metrics = nullptr);

  grpc::ServerUnaryReactor* CreateTable(grpc::CallbackServerContext* ctx, const tessera::v1::CreateTableRequest* req,
                                        tessera::v1::CreateTableResponse* resp) override;
  grpc::ServerUnaryReactor* DropTables(grpc::CallbackServerContext* ctx, const tessera::v1::DropTablesRequest* req,
                                       tessera::v1::DropTablesResponse* resp) override;
  // Data path: `req` holds an encoded PullRequest / PushRequest / PushPullRequest, `resp` gets the
  // encoded response.
  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                 grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                 grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* PushPull(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                     grpc::ByteBuffer* resp) override;
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

// Request -> store argument conversions, shared with tests. The arguments point into `req`.
PullArgs ToPullArgs(const tessera::v1::PullRequest& req);
PushArgs ToPushArgs(const tessera::v1::PushRequest& req);
PullArgs ToPullArgs(const wire::PullFields& req);
// `req.gradients` must hold whole float32 values.
PushArgs ToPushArgs(const wire::PushFields& req);

}  // namespace tessera::server

#endif  // TESSERA_SERVER_PARAMETER_SERVICE_H_
