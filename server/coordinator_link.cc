#include "server/coordinator_link.h"

#include <grpcpp/client_context.h>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/rpc.h"
#include "common/status.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/file_util.h"

namespace tessera::server {

using namespace tessera::v1;  // NOLINT

absl::StatusOr<std::string> LoadOrCreateServerId(const std::string& data_dir) {
  absl::BitGen gen;
  const std::string fresh = absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen));
  if (data_dir.empty()) return fresh;
  const std::string path = data_dir + "/SERVER_ID";
  ASSIGN_OR_RETURN(bool exists, PathExists(path));
  if (exists) {
    ASSIGN_OR_RETURN(std::string id, ReadFile(path));
    id = std::string(absl::StripAsciiWhitespace(id));
    if (!id.empty()) return id;
  }
  RETURN_IF_ERROR(WriteFileAtomically(path, fresh + "\n"));
  return fresh;
}

CoordinatorLink::CoordinatorLink(CoordinatorLinkOptions options, ShardStore* store)
    : options_(std::move(options)),
      store_(store),
      stub_(CoordinatorService::NewStub(
          CreateChannel(options_.coordinator, ChannelOptions{.security = options_.security}))) {}

CoordinatorLink::~CoordinatorLink() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

absl::Status CoordinatorLink::Register() {
  RegisterServerRequest req;
  req.set_server_id(options_.server_id);
  req.set_address(options_.advertise_address);
  req.set_capacity_bytes(options_.capacity_bytes);
  for (const auto& t : store_->TablesWithPrefix("")) req.add_tables(t->spec.name());
  RegisterServerResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  RETURN_IF_ERROR(FromGrpcStatus(stub_->RegisterServer(&ctx, req, &resp)));
  shard_id_ = resp.shard_id();
  if (resp.heartbeat_interval_ms() > 0) interval_ms_ = static_cast<int>(resp.heartbeat_interval_ms());
  if (resp.in_map()) {
    RETURN_IF_ERROR(store_->UpdateShardMap(resp.shard_map(), resp.shard_id()).status());
  }
  spdlog::info("registered with coordinator {} as shard {}{} (shard map version {})", options_.coordinator,
               resp.shard_id(), resp.in_map() ? "" : ", spare", resp.shard_map().version());
  return InstallTables(resp);
}

absl::Status CoordinatorLink::InstallTables(const RegisterServerResponse& resp) {
  // Group assignments by job so a checkpoint is loaded once per job.
  std::map<std::string, std::vector<const TableAssignment*>> by_prefix;
  for (const auto& a : resp.tables()) by_prefix[a.prefix()].push_back(&a);
  for (const auto& [prefix, tables] : by_prefix) {
    const TableAssignment& first = *tables.front();
    const std::string root = CheckpointRoot(first.checkpoint_dir(), options_.checkpoint_root, resp.shard_id());
    bool loaded = false;
    if (first.checkpoint_id() > 0) {
      auto r = LoadCheckpoint(*store_, root, prefix, first.checkpoint_id());
      if (r.ok()) {
        spdlog::info("job {}: restored checkpoint {} ({} rows, {} applied pushes)", first.job_id(),
                     first.checkpoint_id(), r->rows(), r->applied_pushes());
        loaded = true;
      } else {
        spdlog::error("job {}: checkpoint {} is unusable: {}", first.job_id(), first.checkpoint_id(), r.status());
        auto older = LatestValidCheckpoint(root, prefix, first.checkpoint_id() - 1);
        if (older.ok()) {
          auto r2 = LoadCheckpoint(*store_, root, prefix, *older);
          if (r2.ok()) {
            spdlog::warn("job {}: using the previous complete checkpoint {} instead", first.job_id(), *older);
            loaded = true;
          }
        }
      }
    }
    if (!loaded) {
      for (const TableAssignment* a : tables) {
        auto created = store_->CreateTable(a->spec());
        if (!created.ok()) return Annotate(created.status(), "creating assigned table");
        spdlog::info("job {}: created table '{}' from its initializer{}", a->job_id(), a->spec().name(),
                     first.checkpoint_id() > 0 ? " (no usable checkpoint)" : "");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CoordinatorLink::Start(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last;
  absl::Duration backoff = absl::Milliseconds(100);
  for (;;) {
    last = Register();
    if (last.ok()) break;
    if (absl::Now() + backoff > deadline) {
      return Annotate(last, absl::StrCat("registering with coordinator ", options_.coordinator));
    }
    spdlog::warn("registering with coordinator {}: {}; retrying", options_.coordinator, last);
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
  thread_ = std::thread([this] { HeartbeatLoop(); });
  return absl::OkStatus();
}

void CoordinatorLink::HeartbeatLoop() {
  absl::Time last_warning = absl::InfinitePast();
  while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(interval_ms_.load()))) {
    ServerHeartbeatRequest req;
    req.set_server_id(options_.server_id);
    req.set_shard_map_version(store_->shard_map_version());
    store_->FillStatus(req.mutable_status());
    req.mutable_status()->set_server_id(options_.server_id);
    ServerHeartbeatResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    absl::Status s = FromGrpcStatus(stub_->ServerHeartbeat(&ctx, req, &resp));
    if (s.ok() && resp.reregister()) {
      spdlog::warn("the coordinator does not know this server: registering again");
      s = Register();
    } else if (s.ok() && resp.has_shard_map()) {
      auto v = store_->UpdateShardMap(resp.shard_map(), resp.shard_id());
      if (v.ok()) spdlog::info("shard map version {} from heartbeat", *v);
    }
    if (!s.ok() && absl::Now() - last_warning > absl::Seconds(10)) {
      spdlog::warn("heartbeat to coordinator {}: {} (still serving; retrying)", options_.coordinator, s);
      last_warning = absl::Now();
    }
  }
}

}  // namespace tessera::server
