#include "server/parameter_service.h"

#include "common/logging.h"

#include "absl/strings/str_cat.h"
#include "common/fault.h"
#include "common/float_codec.h"
#include "common/status.h"

namespace tessera::server {

using namespace tessera::v1;  // NOLINT: message types of this service

namespace {
// Times a data-path request for the store's rate and latency windows.
class RequestTimer {
 public:
  RequestTimer(ShardStore* store, bool is_push) : store_(store), is_push_(is_push), start_(absl::Now()) {}
  ~RequestTimer() { store_->RecordLatency(is_push_, absl::ToDoubleMicroseconds(absl::Now() - start_)); }

 private:
  ShardStore* store_;
  bool is_push_;
  absl::Time start_;
};

absl::Span<const uint64_t> Keys(const google::protobuf::RepeatedField<uint64_t>& keys) {
  return absl::MakeConstSpan(keys.data(), keys.size());
}

absl::Status CheckGradientBytes(size_t bytes) {
  if (bytes % sizeof(float) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradients hold ", bytes, " bytes, not a whole number of float32 values"));
  }
  return absl::OkStatus();
}
}  // namespace

PullArgs ToPullArgs(const PullRequest& req) {
  PullArgs a;
  a.table = req.table();
  a.keys = Keys(req.keys());
  a.offset = req.offset();
  a.length = req.length();
  a.shard_map_version = req.shard_map_version();
  a.averaged = req.averaged();
  return a;
}

PushArgs ToPushArgs(const PushRequest& req) {
  PushArgs a;
  a.table = req.table();
  a.keys = Keys(req.keys());
  a.offset = req.offset();
  a.gradients = FloatView(req.gradients());
  a.worker_id = req.worker_id();
  a.sequence = req.sequence();
  a.shard_map_version = req.shard_map_version();
  a.learning_rate_scale = req.learning_rate_scale();
  return a;
}

PullArgs ToPullArgs(const wire::PullFields& req) {
  PullArgs a;
  a.table = req.table;
  a.keys = req.keys;
  a.offset = req.offset;
  a.length = req.length;
  a.shard_map_version = req.shard_map_version;
  a.averaged = req.averaged;
  return a;
}

PushArgs ToPushArgs(const wire::PushFields& req) {
  PushArgs a;
  a.table = req.table;
  a.keys = req.keys;
  a.offset = req.offset;
  a.gradients = FloatView(req.gradients);
  a.worker_id = req.worker_id;
  a.sequence = req.sequence;
  a.shard_map_version = req.shard_map_version;
  a.learning_rate_scale = req.learning_rate_scale;
  return a;
}

ParameterServiceImpl::ParameterServiceImpl(ShardStore* store, CheckpointHooks hooks,
                                           std::shared_ptr<const Security> security, Metrics* metrics)
    : store_(store),
      hooks_(std::move(hooks)),
      security_(security ? std::move(security) : Security::Insecure()),
      metrics_(metrics) {}

// Every handler starts with this: a call without the right bearer token ends here.
#define TESSERA_AUTHENTICATE(method)                                              \
  if (absl::Status auth = security_->CheckToken(*ctx, method, metrics_); !auth.ok()) { \
    return Finish(ctx, auth);                                                     \
  }

grpc::ServerUnaryReactor* ParameterServiceImpl::Finish(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  if (!status.ok()) {
    store_->CountRejected();
    if (auto v = status.GetPayload(kShardMapVersionPayload)) {
      ctx->AddTrailingMetadata(kShardMapVersionPayload, std::string(*v));
    }
    SPDLOG_DEBUG("rejected {}: {}", ctx->peer(), status.ToString());
  }
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServiceImpl::CreateTable(grpc::CallbackServerContext* ctx,
                                                            const CreateTableRequest* req, CreateTableResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/CreateTable");
  auto created = store_->CreateTable(req->spec());
  if (created.ok()) {
    resp->set_created(*created);
    if (*created) spdlog::info("created table '{}' ({})", req->spec().name(), req->spec().ShortDebugString());
  }
  return Finish(ctx, created.status());
}

grpc::ServerUnaryReactor* ParameterServiceImpl::DropTables(grpc::CallbackServerContext* ctx,
                                                           const DropTablesRequest* req, DropTablesResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/DropTables");
  for (auto& name : store_->DropTables(req->prefix())) {
    spdlog::info("dropped table '{}'", name);
    resp->add_dropped(std::move(name));
  }
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ParameterServiceImpl::Pull(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                     grpc::ByteBuffer* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/Pull");
  RequestTimer timer(store_, false);
  if (auto f = TESSERA_FAULT("server.pull"); f.fired()) return Finish(ctx, f.status());
  wire::RequestDecoder decoder;
  wire::PullFields pull;
  absl::Status s = decoder.DecodePull(*req, &pull);
  if (!s.ok()) return Finish(ctx, s);
  wire::ValuesResponseWriter writer;
  s = store_->Pull(ToPullArgs(pull), [&writer](size_t n) { return writer.Allocate(n); });
  if (s.ok()) *resp = writer.Finish();
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* ParameterServiceImpl::Push(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                     grpc::ByteBuffer* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/Push");
  RequestTimer timer(store_, true);
  if (auto f = TESSERA_FAULT("server.push.before_apply"); f.fired()) return Finish(ctx, f.status());
  wire::RequestDecoder decoder;
  wire::PushFields push;
  absl::Status s = decoder.DecodePush(*req, &push);
  if (s.ok()) s = CheckGradientBytes(push.gradients.size());
  bool duplicate = false;
  if (s.ok()) {
    auto dup = store_->Push(ToPushArgs(push));
    if (dup.ok()) duplicate = *dup;
    s = dup.status();
  }
  if (auto f = TESSERA_FAULT("server.push.after_apply"); s.ok() && f.fired()) return Finish(ctx, f.status());
  if (s.ok()) *resp = wire::EncodePushResponse(duplicate);
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* ParameterServiceImpl::PushPull(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                         grpc::ByteBuffer* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/PushPull");
  RequestTimer timer(store_, true);
  if (auto f = TESSERA_FAULT("server.push.before_apply"); f.fired()) return Finish(ctx, f.status());
  wire::RequestDecoder decoder;
  wire::PushFields push;
  wire::PullFields explicit_pull;
  bool has_pull = false;
  absl::Status s = decoder.DecodePushPull(*req, &push, &explicit_pull, &has_pull);
  if (s.ok()) s = CheckGradientBytes(push.gradients.size());
  bool duplicate = false;
  if (s.ok()) {
    auto dup = store_->Push(ToPushArgs(push));
    if (dup.ok()) duplicate = *dup;
    s = dup.status();
  }
  if (s.ok()) {
    PullArgs pull;
    if (has_pull) {
      pull = ToPullArgs(explicit_pull);
    } else {
      pull.table = push.table;
      pull.keys = push.keys;
      pull.offset = push.offset;
      pull.length = push.keys.empty() ? push.gradients.size() / sizeof(float) : 0;
      pull.shard_map_version = push.shard_map_version;
    }
    if (auto f = TESSERA_FAULT("server.push.after_apply"); f.fired()) return Finish(ctx, f.status());
    wire::ValuesResponseWriter writer(/*push_pull=*/true, duplicate);
    s = store_->Pull(pull, [&writer](size_t n) { return writer.Allocate(n); });
    if (s.ok()) *resp = writer.Finish();
  }
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* ParameterServiceImpl::UpdateShardMap(grpc::CallbackServerContext* ctx,
                                                               const UpdateShardMapRequest* req,
                                                               UpdateShardMapResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/UpdateShardMap");
  const uint64_t before = store_->shard_map_version();
  auto v = store_->UpdateShardMap(req->shard_map(), req->shard_id());
  if (v.ok()) {
    resp->set_version(*v);
    if (*v != before) spdlog::info("shard {}: shard map version {} -> {}", req->shard_id(), before, *v);
  }
  return Finish(ctx, v.status());
}

grpc::ServerUnaryReactor* ParameterServiceImpl::ServerStatus(grpc::CallbackServerContext* ctx,
                                                             const ServerStatusRequest*, ServerStatusResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/ServerStatus");
  store_->FillStatus(resp);
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ParameterServiceImpl::SaveCheckpoint(grpc::CallbackServerContext* ctx,
                                                               const SaveCheckpointRequest* req,
                                                               SaveCheckpointResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/SaveCheckpoint");
  if (!hooks_.save) return Finish(ctx, absl::UnimplementedError("checkpoints are not enabled on this server"));
  auto* reactor = ctx->DefaultReactor();
  checkpoint_pool_.Schedule([this, reactor, req, resp] {
    auto r = hooks_.save(*req);
    if (r.ok()) {
      *resp = std::move(r).value();
      spdlog::info("saved checkpoint {} of '{}': {} rows, {} bytes", req->checkpoint_id(), req->prefix(), resp->rows(),
                   resp->bytes());
    } else {
      spdlog::error("checkpoint {} of '{}' failed: {}", req->checkpoint_id(), req->prefix(), r.status());
    }
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServiceImpl::LoadCheckpoint(grpc::CallbackServerContext* ctx,
                                                               const LoadCheckpointRequest* req,
                                                               LoadCheckpointResponse* resp) {
  TESSERA_AUTHENTICATE("/tessera.v1.ParameterService/LoadCheckpoint");
  if (!hooks_.load) return Finish(ctx, absl::UnimplementedError("checkpoints are not enabled on this server"));
  auto* reactor = ctx->DefaultReactor();
  checkpoint_pool_.Schedule([this, reactor, req, resp] {
    auto r = hooks_.load(*req);
    if (r.ok()) {
      *resp = std::move(r).value();
      spdlog::info("loaded checkpoint {} of '{}': {} rows", req->checkpoint_id(), req->prefix(), resp->rows());
    } else {
      spdlog::error("loading checkpoint {} of '{}' failed: {}", req->checkpoint_id(), req->prefix(), r.status());
    }
    reactor->Finish(ToGrpcStatus(r.status()));
  });
  return reactor;
}

#undef TESSERA_AUTHENTICATE

}  // namespace tessera::server
