#include "client/kv_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/generic/generic_stub.h>

#include <algorithm>
#include <cmath>
#include <thread>
#include <cstring>
#include <random>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/delay_queue.h"
#include "common/partition.h"
#include "common/rpc.h"
#include "common/status.h"
#include "common/wire.h"
#include "tessera/v1/parameter.grpc.pb.h"

namespace tessera::client {

using tessera::v1::ParameterService;

namespace {
enum Kind { kPull = 0, kPush = 1, kPushPull = 2 };
constexpr char kMapVersionKey[] = "tessera-shard-map-version";

uint64_t RandomId() {
  absl::BitGen gen;
  uint64_t id = 0;
  while (id == 0) id = absl::Uniform<uint64_t>(gen);
  return id;
}

// Full method names for the generic stub (which takes them as std::string).
const std::string& MethodName(int kind) {
  static const auto* const kNames =
      new std::string[3]{"/tessera.v1.ParameterService/Pull", "/tessera.v1.ParameterService/Push",
                         "/tessera.v1.ParameterService/PushPull"};
  return kNames[kind];
}

template <typename T>
absl::string_view AsBytes(absl::Span<const T> values) {
  return absl::string_view(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

bool StrictlyIncreasing(absl::Span<const uint64_t> keys) {
  for (size_t i = 1; i < keys.size(); ++i) {
    if (keys[i] <= keys[i - 1]) return false;
  }
  return true;
}
}  // namespace

namespace internal {

struct Routing {
  tessera::v1::ShardMap map;
  uint64_t version = 0;
  std::shared_ptr<const Partitioner> partitioner;
  // One TCP connection to a shard: the generated stub for administration, a generic stub for the
  // data path (raw byte buffers, see common/wire.h), on the same channel.
  struct Connection {
    std::shared_ptr<ParameterService::Stub> stub;
    std::shared_ptr<grpc::GenericStub> generic;
  };
  // Per shard index: the connections.
  std::vector<std::vector<Connection>> connections;
  mutable std::atomic<uint32_t> round_robin{0};

  const Connection& ConnectionFor(uint32_t index) const {
    const auto& c = connections[index];
    return c[c.size() == 1 ? 0 : round_robin.fetch_add(1, std::memory_order_relaxed) % c.size()];
  }
  ParameterService::Stub* StubFor(uint32_t index) const { return ConnectionFor(index).stub.get(); }
};

// Shared state of one logical call.
struct OpState {
  int kind = kPull;
  bool sparse = true;
  std::string table;
  uint32_t dim = 1;
  float lr_scale = 0;
  bool averaged = false;
  absl::Time deadline;

  // Sparse: the unique, sorted keys the RPCs carry, and (when the caller's keys were not already
  // sorted and unique) where each caller position reads its row from.
  std::vector<uint64_t> owned_keys;
  absl::Span<const uint64_t> ukeys;
  std::vector<uint32_t> pos_to_u;
  std::vector<float> owned_grads;
  absl::Span<const float> grads;  // per unique key (sparse) or per element (dense)
  std::vector<float> owned_out;
  float* uout = nullptr;          // per unique key (sparse) or per element (dense)
  absl::Span<float> caller_out;
  uint64_t dense_offset = 0;

  absl::Mutex mu;
  int pending ABSL_GUARDED_BY(mu) = 0;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Status status ABSL_GUARDED_BY(mu);
  std::shared_ptr<std::atomic<int64_t>> in_flight;

  // Records the end of one sub-request; the last one completes the call.
  void SubDone(const absl::Status& s) {
    bool finish = false;
    {
      absl::MutexLock lock(&mu);
      if (!s.ok() && status.ok()) status = s;
      finish = --pending == 0;
    }
    if (finish) Complete();
  }
  void AddPending(int n) {
    absl::MutexLock lock(&mu);
    pending += n;
  }
  void Complete() {
    absl::MutexLock lock(&mu);
    if (status.ok() && kind != kPush && !pos_to_u.empty()) {
      for (size_t i = 0; i < pos_to_u.size(); ++i) {
        std::memcpy(caller_out.data() + i * dim, uout + size_t{pos_to_u[i]} * dim, dim * sizeof(float));
      }
    }
    done = true;
    in_flight->fetch_sub(1);
  }
};

// Holds a call open while gRPC may still read the caller's memory. gRPC can keep a request's slices
// after the RPC finished (a failed call whose bytes are still queued for the socket), so a call
// that sent the caller's keys or gradients in place completes only when this is released too.
struct CallerMemoryPin {
  explicit CallerMemoryPin(std::shared_ptr<OpState> o) : op(std::move(o)) { op->AddPending(1); }
  ~CallerMemoryPin() { op->SubDone(absl::OkStatus()); }
  CallerMemoryPin(const CallerMemoryPin&) = delete;
  CallerMemoryPin& operator=(const CallerMemoryPin&) = delete;
  std::shared_ptr<OpState> op;
};

}  // namespace internal

using internal::OpState;
using internal::Routing;

// One RPC to one shard for part of a logical call; retried and re-routed as a unit.
struct KvClient::SubRequest {
  std::shared_ptr<OpState> op;
  std::shared_ptr<const Routing> routing;
  uint32_t shard_index = 0;
  uint32_t shard_id = 0;
  // Sparse: positions in op->ukeys; `all` means every unique key, in order.
  bool all = false;
  std::vector<uint32_t> positions;
  // Dense: global element range.
  uint64_t begin = 0, end = 0;
  uint64_t sequence = 0;
  int attempt = 0;

  std::unique_ptr<grpc::ClientContext> ctx;
  // The encoded request and response of the current attempt (common/wire.h).
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;

  size_t num_keys() const { return all ? op->ukeys.size() : positions.size(); }
};

// ---------------------------------------------------------------------------------------------
// KvFuture

absl::Status KvFuture::Wait() const {
  if (state_ == nullptr) return absl::FailedPreconditionError("KvFuture is empty");
  absl::MutexLock lock(&state_->mu);
  state_->mu.Await(absl::Condition(&state_->done));
  return state_->status;
}

absl::Status KvFuture::WaitFor(absl::Duration timeout) const {
  if (state_ == nullptr) return absl::FailedPreconditionError("KvFuture is empty");
  absl::MutexLock lock(&state_->mu);
  if (!state_->mu.AwaitWithTimeout(absl::Condition(&state_->done), timeout)) {
    return absl::DeadlineExceededError("call still running");
  }
  return state_->status;
}

bool KvFuture::Ready() const {
  if (state_ == nullptr) return false;
  absl::MutexLock lock(&state_->mu);
  return state_->done;
}

// ---------------------------------------------------------------------------------------------
// Construction and routing

KvClient::KvClient(std::unique_ptr<ShardMapSource> source, KvClientOptions options)
    : options_(std::move(options)),
      worker_id_(options_.worker_id != 0 ? options_.worker_id : RandomId()),
      source_(std::move(source)),
      delay_(std::make_unique<DelayQueue>()) {}

absl::StatusOr<std::unique_ptr<KvClient>> KvClient::Create(std::unique_ptr<ShardMapSource> source,
                                                           KvClientOptions options) {
  if (source == nullptr) return absl::InvalidArgumentError("KvClient needs a shard map source");
  std::unique_ptr<KvClient> client(new KvClient(std::move(source), std::move(options)));
  RETURN_IF_ERROR(client->RefreshIfOlder(0, /*force=*/true));
  return client;
}

absl::StatusOr<std::unique_ptr<KvClient>> KvClient::Connect(std::vector<std::string> addresses,
                                                            KvClientOptions options) {
  if (addresses.empty()) return absl::InvalidArgumentError("KvClient::Connect needs at least one server address");
  return Create(StaticShardMap(std::move(addresses)), std::move(options));
}

KvClient::~KvClient() {
  // Calls in flight finish on their own (each is bounded by total_timeout); their retries need the
  // delay queue, so it goes last.
  const absl::Time give_up = absl::Now() + options_.total_timeout + options_.rpc_timeout + absl::Seconds(5);
  while (in_flight_ops_->load() > 0 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(5));
  delay_.reset();
}

std::shared_ptr<const Routing> KvClient::routing() const {
  absl::MutexLock lock(&mu_);
  return routing_;
}

uint64_t KvClient::shard_map_version() const { return routing()->version; }

absl::StatusOr<std::shared_ptr<const Routing>> KvClient::BuildRouting(const tessera::v1::ShardMap& map) {
  if (map.shards().empty()) return absl::UnavailableError("the shard map has no servers yet");
  auto r = std::make_shared<Routing>();
  r->map = map;
  r->version = map.version();
  std::vector<uint32_t> ids;
  for (const auto& s : map.shards()) ids.push_back(s.shard_id());
  r->partitioner = std::make_shared<const Partitioner>(ids, map.virtual_nodes());
  const auto& sorted = r->partitioner->shard_ids();
  r->connections.resize(sorted.size());
  std::shared_ptr<const Routing> old = routing();
  for (const auto& s : map.shards()) {
    const int index = r->partitioner->IndexOf(s.shard_id());
    std::string address = s.address();
    if (auto it = options_.address_overrides.find(s.shard_id()); it != options_.address_overrides.end()) {
      address = it->second;
    }
    // Reuse the previous routing's stubs (and so channels) for an unchanged address.
    if (old != nullptr) {
      for (const auto& os : old->map.shards()) {
        if (os.shard_id() == s.shard_id() && os.address() == s.address()) {
          r->connections[index] = old->connections[old->partitioner->IndexOf(os.shard_id())];
        }
      }
    }
    if (r->connections[index].empty()) {
      for (int c = 0; c < std::max(1, options_.connections_per_server); ++c) {
        ChannelOptions co;
        co.max_message_bytes = options_.max_message_bytes;
        co.connection_index = c;
        co.security = options_.security;
        std::shared_ptr<grpc::Channel> channel = CreateChannel(address, co);
        r->connections[index].push_back(
            {ParameterService::NewStub(channel), std::make_shared<grpc::GenericStub>(channel)});
      }
    }
  }
  return std::shared_ptr<const Routing>(std::move(r));
}

absl::Status KvClient::RefreshIfOlder(uint64_t min_version, bool force) {
  absl::MutexLock serialize(&refresh_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (routing_ != nullptr && !force) {
      if (min_version != 0 && routing_->version >= min_version) return absl::OkStatus();
      if (min_version == 0 && absl::Now() - last_refresh_ < absl::Milliseconds(500)) return absl::OkStatus();
    }
  }
  auto map = source_->Fetch();
  {
    absl::MutexLock lock(&mu_);
    last_refresh_ = absl::Now();
  }
  if (!map.ok()) return Annotate(map.status(), "fetching the shard map");
  {
    absl::MutexLock lock(&mu_);
    if (routing_ != nullptr && map->version() < routing_->version) return absl::OkStatus();
    if (routing_ != nullptr && map->version() == routing_->version && map->SerializeAsString() ==
                                                                          routing_->map.SerializeAsString()) {
      return absl::OkStatus();
    }
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Routing> r, BuildRouting(*map));
  refreshes_.fetch_add(1);
  absl::MutexLock lock(&mu_);
  routing_ = std::move(r);
  return absl::OkStatus();
}

absl::Status KvClient::RefreshShardMap() { return RefreshIfOlder(0, /*force=*/true); }

// ---------------------------------------------------------------------------------------------
// Starting calls

KvFuture KvClient::StartSparse(int kind, const std::string& table, absl::Span<const uint64_t> keys,
                               absl::Span<const float> grads, absl::Span<float> out, PushOptions options,
                               PullOptions pull_options) {
  auto op = std::make_shared<OpState>();
  op->kind = kind;
  op->sparse = true;
  op->table = table;
  op->lr_scale = options.learning_rate_scale;
  op->averaged = pull_options.averaged;
  op->deadline = absl::Now() + options_.total_timeout;
  op->in_flight = in_flight_ops_;
  op->caller_out = out;
  in_flight_ops_->fetch_add(1);
  KvFuture future(op);

  auto fail = [&](absl::Status s) {
    {
      absl::MutexLock lock(&op->mu);
      op->status = std::move(s);
    }
    op->Complete();
    return future;
  };
  if (keys.empty()) return fail(absl::InvalidArgumentError(absl::StrCat("call on table '", table, "' has no keys")));
  const size_t n = keys.size();
  const absl::Span<const float> sizing = kind == kPull ? absl::Span<const float>(out.data(), out.size()) : grads;
  if (sizing.size() == 0 || sizing.size() % n != 0) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat(kind == kPull ? "output" : "gradient", " buffer of ", sizing.size(), " floats for ", n,
                     " keys of table '", table, "' is not a whole number of rows")));
  }
  op->dim = static_cast<uint32_t>(sizing.size() / n);
  if (kind == kPushPull && out.size() != grads.size()) {
    return fail(absl::InvalidArgumentError(absl::StrCat("PushPull on table '", table, "': output holds ", out.size(),
                                                        " floats but gradients ", grads.size())));
  }
  const uint32_t dim = op->dim;

  if (StrictlyIncreasing(keys)) {
    op->ukeys = keys;
    op->grads = grads;
    op->uout = out.data();
  } else {
    // Sort (key, position) pairs, then give each distinct key one slot; repeated keys' gradients add up.
    std::vector<std::pair<uint64_t, uint32_t>> pairs(n);
    for (size_t i = 0; i < n; ++i) pairs[i] = {keys[i], static_cast<uint32_t>(i)};
    std::sort(pairs.begin(), pairs.end());
    op->pos_to_u.resize(n);
    op->owned_keys.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (i == 0 || pairs[i].first != pairs[i - 1].first) op->owned_keys.push_back(pairs[i].first);
      op->pos_to_u[pairs[i].second] = static_cast<uint32_t>(op->owned_keys.size() - 1);
    }
    const size_t u = op->owned_keys.size();
    op->ukeys = op->owned_keys;
    if (kind != kPull) {
      op->owned_grads.assign(u * dim, 0.0f);
      for (size_t i = 0; i < n; ++i) {
        float* dst = op->owned_grads.data() + size_t{op->pos_to_u[i]} * dim;
        const float* src = grads.data() + i * dim;
        for (uint32_t j = 0; j < dim; ++j) dst[j] += src[j];
      }
      op->grads = op->owned_grads;
    }
    if (kind != kPush) {
      op->owned_out.resize(u * dim);
      op->uout = op->owned_out.data();
    }
  }
  std::shared_ptr<const Routing> r = routing();
  op->AddPending(1);  // held while routing so the call cannot complete half-sent
  Route(op, r, {}, 0, 0);
  op->SubDone(absl::OkStatus());
  return future;
}

KvFuture KvClient::StartDense(int kind, const std::string& table, uint64_t offset, absl::Span<const float> grads,
                              absl::Span<float> out, PushOptions options, PullOptions pull_options) {
  auto op = std::make_shared<OpState>();
  op->kind = kind;
  op->sparse = false;
  op->table = table;
  op->lr_scale = options.learning_rate_scale;
  op->averaged = pull_options.averaged;
  op->deadline = absl::Now() + options_.total_timeout;
  op->in_flight = in_flight_ops_;
  op->caller_out = out;
  op->grads = grads;
  op->uout = out.data();
  op->dense_offset = offset;
  in_flight_ops_->fetch_add(1);
  KvFuture future(op);
  auto fail = [&](absl::Status s) {
    {
      absl::MutexLock lock(&op->mu);
      op->status = std::move(s);
    }
    op->Complete();
    return future;
  };
  const uint64_t n = kind == kPull ? out.size() : grads.size();
  if (n == 0) return fail(absl::InvalidArgumentError(absl::StrCat("dense call on table '", table, "' has length 0")));
  if (kind == kPushPull && out.size() != grads.size()) {
    return fail(absl::InvalidArgumentError(absl::StrCat("PushPullDense on table '", table, "': output holds ",
                                                        out.size(), " floats but gradients ", grads.size())));
  }
  std::shared_ptr<const Routing> r = routing();
  op->AddPending(1);
  Route(op, r, {}, offset, offset + n);
  op->SubDone(absl::OkStatus());
  return future;
}

void KvClient::Route(const std::shared_ptr<OpState>& op, const std::shared_ptr<const Routing>& r,
                     std::vector<uint32_t> positions, uint64_t dense_begin, uint64_t dense_end) {
  const Partitioner& part = *r->partitioner;
  const size_t shards = part.num_shards();
  std::vector<std::shared_ptr<SubRequest>> subs;
  auto new_sub = [&](uint32_t index) {
    auto sub = std::make_shared<SubRequest>();
    sub->op = op;
    sub->routing = r;
    sub->shard_index = index;
    sub->shard_id = part.shard_ids()[index];
    sub->sequence = next_sequence_.fetch_add(1);
    subs.push_back(sub);
    return sub.get();
  };
  if (op->sparse) {
    const bool everything = positions.empty();
    const size_t n = everything ? op->ukeys.size() : positions.size();
    if (shards == 1) {
      SubRequest* s = new_sub(0);
      s->all = everything;
      s->positions = std::move(positions);
    } else {
      std::vector<std::vector<uint32_t>> by_shard(shards);
      for (size_t j = 0; j < n; ++j) {
        const uint32_t p = everything ? static_cast<uint32_t>(j) : positions[j];
        by_shard[part.ShardIndexForKey(op->ukeys[p])].push_back(p);
      }
      for (uint32_t i = 0; i < shards; ++i) {
        if (by_shard[i].empty()) continue;
        SubRequest* s = new_sub(i);
        s->all = everything && by_shard[i].size() == n;
        if (!s->all) s->positions = std::move(by_shard[i]);
      }
    }
  } else {
    auto spec = GetTableSpec(op->table);
    if (!spec.ok()) {
      op->AddPending(1);
      op->SubDone(spec.status());
      return;
    }
    if (spec->kind() != tessera::v1::TableSpec::DENSE) {
      op->AddPending(1);
      op->SubDone(absl::InvalidArgumentError(absl::StrCat("table '", op->table, "' is not dense")));
      return;
    }
    const uint64_t size = spec->size();
    if (dense_end > size) {
      op->AddPending(1);
      op->SubDone(absl::OutOfRangeError(absl::StrCat("range [", dense_begin, ", ", dense_end,
                                                     ") is outside dense table '", op->table, "' of size ", size)));
      return;
    }
    for (uint32_t i = 0; i < shards; ++i) {
      const DenseRange range = part.DenseRangeForIndex(size, i);
      const uint64_t b = std::max(range.begin, dense_begin), e = std::min(range.end, dense_end);
      if (b >= e) continue;
      SubRequest* s = new_sub(i);
      s->begin = b;
      s->end = e;
    }
  }
  op->AddPending(static_cast<int>(subs.size()));
  for (auto& s : subs) Send(s);
}

// ---------------------------------------------------------------------------------------------
// Sending and completing sub-requests

void KvClient::Send(const std::shared_ptr<SubRequest>& sub) {
  OpState& op = *sub->op;
  const Routing& r = *sub->routing;
  sub->ctx = std::make_unique<grpc::ClientContext>();
  sub->ctx->set_deadline(absl::ToChronoTime(std::min(op.deadline, absl::Now() + options_.rpc_timeout)));
  const size_t row_bytes = size_t{op.dim} * sizeof(float);

  // Payloads go in place when they are big and contiguous (all of the call's keys, a dense range),
  // gathered into a new slice when they are big and scattered, and copied into the message when
  // small. Memory the op owns is kept alive by a reference to the op; the caller's memory also
  // holds the call open until gRPC lets go of it.
  std::shared_ptr<const void> op_pin, caller_pin;
  auto in_place = [&](absl::string_view bytes, bool caller_memory) {
    if (bytes.size() < wire::kMinSliceBytes) return wire::Payload::Copy(bytes);
    std::shared_ptr<const void>& pin = caller_memory ? caller_pin : op_pin;
    if (pin == nullptr) {
      pin = caller_memory ? std::static_pointer_cast<const void>(std::make_shared<internal::CallerMemoryPin>(sub->op))
                          : std::static_pointer_cast<const void>(sub->op);
    }
    return wire::Payload::Reference(wire::PinnedSlice(bytes.data(), bytes.size(), pin));
  };
  absl::InlinedVector<uint64_t, 64> small_keys, small_grads;
  auto gather = [](size_t bytes, absl::InlinedVector<uint64_t, 64>* small, wire::Payload* out) -> char* {
    if (bytes < wire::kMinSliceBytes) {
      small->resize((bytes + 7) / 8);
      *out = wire::Payload::Copy(absl::string_view(reinterpret_cast<const char*>(small->data()), bytes));
      return reinterpret_cast<char*>(small->data());
    }
    char* dst;
    *out = wire::Payload::Reference(wire::AllocatedSlice(bytes, &dst));
    return dst;
  };

  wire::Payload keys, grads;
  if (op.sparse) {
    if (sub->all) {
      keys = in_place(AsBytes(op.ukeys), op.owned_keys.empty());
    } else {
      char* dst = gather(sub->positions.size() * sizeof(uint64_t), &small_keys, &keys);
      for (size_t j = 0; j < sub->positions.size(); ++j) {
        std::memcpy(dst + j * sizeof(uint64_t), &op.ukeys[sub->positions[j]], sizeof(uint64_t));
      }
    }
  }
  if (op.kind != kPull) {
    if (!op.sparse) {
      grads = in_place(AsBytes(op.grads.subspan(sub->begin - op.dense_offset, sub->end - sub->begin)),
                       op.owned_grads.empty());
    } else if (sub->all) {
      grads = in_place(AsBytes(op.grads), op.owned_grads.empty());
    } else {
      char* dst = gather(sub->positions.size() * row_bytes, &small_grads, &grads);
      for (size_t j = 0; j < sub->positions.size(); ++j) {
        std::memcpy(dst + j * row_bytes, op.grads.data() + size_t{sub->positions[j]} * op.dim, row_bytes);
      }
    }
  }
  if (op.kind == kPull) {
    wire::PullHeader h;
    h.table = op.table;
    h.shard_map_version = r.version;
    h.averaged = op.averaged;
    if (!op.sparse) {
      h.offset = sub->begin;
      h.length = sub->end - sub->begin;
    }
    sub->request = wire::EncodePullRequest(h, std::move(keys));
  } else {
    wire::PushHeader h;
    h.table = op.table;
    h.offset = op.sparse ? 0 : sub->begin;
    h.worker_id = worker_id_;
    h.sequence = sub->sequence;
    h.shard_map_version = r.version;
    h.learning_rate_scale = op.lr_scale;
    sub->request = op.kind == kPush ? wire::EncodePushRequest(h, std::move(keys), std::move(grads))
                                    : wire::EncodePushPullRequest(h, std::move(keys), std::move(grads));
  }
  sub->response.Clear();

  const Routing::Connection& conn = r.ConnectionFor(sub->shard_index);
  rpcs_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<SubRequest> keep = sub;
  auto done = [this, keep](grpc::Status s) {
    // gRPC's C++ layer has dropped its copy of the request; ours goes too, so the pins go as soon
    // as the transport lets go of the bytes (usually already done).
    keep->request.Clear();
    uint64_t server_version = 0;
    if (!s.ok()) {
      const auto& md = keep->ctx->GetServerTrailingMetadata();
      auto it = md.find(kMapVersionKey);
      if (it != md.end()) {
        (void)absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()), &server_version);
      }
    }
    OnDone(keep, FromGrpcStatus(s), server_version);
  };
  // Pins live in the request's slices from here on; the local references go now.
  op_pin.reset();
  caller_pin.reset();
  conn.generic->UnaryCall(sub->ctx.get(), MethodName(op.kind), grpc::StubOptions(), &sub->request, &sub->response,
                          std::move(done));
}

void KvClient::OnDone(const std::shared_ptr<SubRequest>& sub, const absl::Status& status,
                      uint64_t server_map_version) {
  OpState& op = *sub->op;
  if (!status.ok()) {
    sub->response.Clear();
    const bool stale = status.code() == absl::StatusCode::kFailedPrecondition &&
                       server_map_version > sub->routing->version;
    if ((stale || IsRetryable(status)) && absl::Now() < op.deadline) {
      retries_.fetch_add(1, std::memory_order_relaxed);
      std::shared_ptr<SubRequest> keep = sub;
      absl::Duration delay;
      if (stale) {
        delay = absl::ZeroDuration();
      } else {
        const double base = absl::ToDoubleSeconds(options_.initial_backoff) * std::pow(2.0, std::min(sub->attempt, 10));
        const double capped = std::min(base, absl::ToDoubleSeconds(options_.max_backoff));
        delay = absl::Seconds(capped * absl::Uniform(absl::BitGen(), 0.75, 1.25));
      }
      delay_->RunAfter(delay, [this, keep, status, server_map_version] { Retry(keep, status, server_map_version); });
      return;
    }
    op.SubDone(Annotate(status, absl::StrCat("table '", op.table, "' on shard ", sub->shard_id)));
    return;
  }
  // Success: decode, and copy the values this shard returned into place (the only copy of them).
  wire::ResponseDecoder decoder;
  wire::ResponseFields resp;
  absl::Status parsed = op.kind == kPull   ? decoder.DecodePull(sub->response, &resp)
                        : op.kind == kPush ? decoder.DecodePush(sub->response, &resp)
                                           : decoder.DecodePushPull(sub->response, &resp);
  sub->response.Clear();  // the decoder holds the slices now
  if (!parsed.ok()) {
    op.SubDone(Annotate(parsed, absl::StrCat("table '", op.table, "' on shard ", sub->shard_id)));
    return;
  }
  if (op.kind != kPull && resp.duplicate) duplicates_.fetch_add(1, std::memory_order_relaxed);
  if (op.kind != kPush) {
    const wire::FieldBytes& values = resp.values;
    const size_t want = (op.sparse ? sub->num_keys() * op.dim : (sub->end - sub->begin)) * sizeof(float);
    if (values.size() != want) {
      op.SubDone(absl::InvalidArgumentError(absl::StrCat(
          "table '", op.table, "' answered ", values.size() / sizeof(float), " floats where ", want / sizeof(float),
          " were expected", op.sparse ? absl::StrCat(" (the output buffer holds ", op.dim, " floats per key)") : "")));
      return;
    }
    if (!op.sparse) {
      values.CopyTo(reinterpret_cast<char*>(op.uout + (sub->begin - op.dense_offset)));
    } else if (sub->all) {
      values.CopyTo(reinterpret_cast<char*>(op.uout));
    } else {
      const size_t row = op.dim * sizeof(float);
      wire::FieldBytes::Cursor cursor(values);
      for (size_t j = 0; j < sub->positions.size(); ++j) {
        cursor.Read(reinterpret_cast<char*>(op.uout + size_t{sub->positions[j]} * op.dim), row);
      }
    }
  }
  op.SubDone(absl::OkStatus());
}

void KvClient::Retry(const std::shared_ptr<SubRequest>& sub, const absl::Status& last, uint64_t server_map_version) {
  // Runs on the delay queue: blocking map fetches are fine here.
  absl::Status refreshed = RefreshIfOlder(server_map_version, /*force=*/false);
  (void)refreshed;  // a failed refresh leaves the old map; the retry then fails or succeeds on its own
  std::shared_ptr<const Routing> r = routing();
  OpState& op = *sub->op;
  // Same shard under the new map: resend with the same sequence, so a push whose response was lost
  // is recognized. Otherwise split again; the old request was refused, so new sequences are safe.
  bool same_shard = r->partitioner->IndexOf(sub->shard_id) >= 0;
  if (same_shard && op.sparse) {
    const uint32_t idx = r->partitioner->IndexOf(sub->shard_id);
    const size_t n = sub->num_keys();
    for (size_t j = 0; j < n && same_shard; ++j) {
      const uint32_t p = sub->all ? static_cast<uint32_t>(j) : sub->positions[j];
      same_shard = r->partitioner->ShardIndexForKey(op.ukeys[p]) == idx;
    }
  } else if (same_shard) {
    auto spec = GetTableSpec(op.table);
    const uint32_t idx = r->partitioner->IndexOf(sub->shard_id);
    if (spec.ok()) {
      const DenseRange range = r->partitioner->DenseRangeForIndex(spec->size(), idx);
      same_shard = sub->begin >= range.begin && sub->end <= range.end;
    }
  }
  if (same_shard) {
    sub->routing = r;
    sub->shard_index = r->partitioner->IndexOf(sub->shard_id);
    ++sub->attempt;
    Send(sub);
    return;
  }
  std::vector<uint32_t> positions = sub->positions;
  if (op.sparse && sub->all) {
    positions.resize(op.ukeys.size());
    for (size_t j = 0; j < positions.size(); ++j) positions[j] = static_cast<uint32_t>(j);
  }
  Route(sub->op, r, std::move(positions), sub->begin, sub->end);
  op.SubDone(absl::OkStatus());  // this sub-request is replaced by the ones Route() sent
}

// ---------------------------------------------------------------------------------------------
// Public data-path calls

absl::Status KvClient::Pull(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<float> out,
                            PullOptions options) {
  return PullAsync(table, keys, out, options).Wait();
}
absl::Status KvClient::Push(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                            PushOptions options) {
  return PushAsync(table, keys, grads, options).Wait();
}
absl::Status KvClient::PushPull(const std::string& table, absl::Span<const uint64_t> keys,
                                absl::Span<const float> grads, absl::Span<float> out, PushOptions options) {
  return PushPullAsync(table, keys, grads, out, options).Wait();
}
KvFuture KvClient::PullAsync(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<float> out,
                             PullOptions options) {
  return StartSparse(kPull, table, keys, {}, out, {}, options);
}
KvFuture KvClient::PushAsync(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                             PushOptions options) {
  return StartSparse(kPush, table, keys, grads, {}, options);
}
KvFuture KvClient::PushPullAsync(const std::string& table, absl::Span<const uint64_t> keys,
                                 absl::Span<const float> grads, absl::Span<float> out, PushOptions options) {
  return StartSparse(kPushPull, table, keys, grads, out, options);
}
absl::Status KvClient::PullDense(const std::string& table, uint64_t offset, absl::Span<float> out,
                                 PullOptions options) {
  return PullDenseAsync(table, offset, out, options).Wait();
}
absl::Status KvClient::PushDense(const std::string& table, uint64_t offset, absl::Span<const float> grads,
                                 PushOptions options) {
  return PushDenseAsync(table, offset, grads, options).Wait();
}
absl::Status KvClient::PushPullDense(const std::string& table, uint64_t offset, absl::Span<const float> grads,
                                     absl::Span<float> out, PushOptions options) {
  return PushPullDenseAsync(table, offset, grads, out, options).Wait();
}
KvFuture KvClient::PullDenseAsync(const std::string& table, uint64_t offset, absl::Span<float> out,
                                  PullOptions options) {
  return StartDense(kPull, table, offset, {}, out, {}, options);
}
KvFuture KvClient::PushDenseAsync(const std::string& table, uint64_t offset, absl::Span<const float> grads,
                                  PushOptions options) {
  return StartDense(kPush, table, offset, grads, {}, options);
}
KvFuture KvClient::PushPullDenseAsync(const std::string& table, uint64_t offset, absl::Span<const float> grads,
                                      absl::Span<float> out, PushOptions options) {
  return StartDense(kPushPull, table, offset, grads, out, options);
}

// ---------------------------------------------------------------------------------------------
// Administration

namespace {
// Runs `call` against every shard in parallel with retries for transient errors; returns per-shard results.
template <typename Resp, typename Call>
std::vector<absl::StatusOr<Resp>> ForEachShard(const Routing& r, const KvClientOptions& options, Call call) {
  const size_t n = r.partitioner->num_shards();
  std::vector<absl::StatusOr<Resp>> results(n, absl::UnknownError("not sent"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      const absl::Time deadline = absl::Now() + options.total_timeout;
      absl::Duration backoff = options.initial_backoff;
      for (;;) {
        grpc::ClientContext ctx;
        ctx.set_deadline(absl::ToChronoTime(absl::Now() + options.rpc_timeout));
        Resp resp;
        absl::Status s = FromGrpcStatus(call(r.StubFor(static_cast<uint32_t>(i)), &ctx, &resp));
        if (s.ok()) {
          results[i] = std::move(resp);
          return;
        }
        if (!IsRetryable(s) || absl::Now() + backoff > deadline) {
          results[i] = Annotate(s, absl::StrCat("shard ", r.partitioner->shard_ids()[i]));
          return;
        }
        absl::SleepFor(backoff);
        backoff = std::min(backoff * 2, options.max_backoff);
      }
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

template <typename T>
absl::Status FirstError(const std::vector<absl::StatusOr<T>>& results) {
  for (const auto& r : results) {
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status KvClient::CreateTable(const tessera::v1::TableSpec& spec) {
  tessera::v1::CreateTableRequest req;
  *req.mutable_spec() = spec;
  auto results = ForEachShard<tessera::v1::CreateTableResponse>(
      *routing(), options_, [&](ParameterService::Stub* stub, grpc::ClientContext* ctx, auto* resp) {
        return stub->CreateTable(ctx, req, resp);
      });
  RETURN_IF_ERROR(FirstError(results));
  absl::MutexLock lock(&mu_);
  specs_[spec.name()] = spec;
  return absl::OkStatus();
}

absl::Status KvClient::DropTables(const std::string& prefix) {
  tessera::v1::DropTablesRequest req;
  req.set_prefix(prefix);
  auto results = ForEachShard<tessera::v1::DropTablesResponse>(
      *routing(), options_, [&](ParameterService::Stub* stub, grpc::ClientContext* ctx, auto* resp) {
        return stub->DropTables(ctx, req, resp);
      });
  absl::MutexLock lock(&mu_);
  for (auto it = specs_.begin(); it != specs_.end();) {
    if (absl::StartsWith(it->first, prefix)) {
      specs_.erase(it++);
    } else {
      ++it;
    }
  }
  return FirstError(results);
}

std::vector<absl::StatusOr<tessera::v1::ServerStatusResponse>> KvClient::ServerStatus() {
  KvClientOptions quick = options_;
  quick.total_timeout = std::min(options_.total_timeout, absl::Seconds(5));
  quick.rpc_timeout = std::min(options_.rpc_timeout, absl::Seconds(5));
  tessera::v1::ServerStatusRequest req;
  return ForEachShard<tessera::v1::ServerStatusResponse>(
      *routing(), quick, [&](ParameterService::Stub* stub, grpc::ClientContext* ctx, auto* resp) {
        return stub->ServerStatus(ctx, req, resp);
      });
}

absl::Status KvClient::InstallShardMap() {
  std::shared_ptr<const Routing> r = routing();
  if (r->version == 0) return absl::OkStatus();  // single standalone server: no placement checks
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(r->partitioner->num_shards());
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      tessera::v1::UpdateShardMapRequest req;
      *req.mutable_shard_map() = r->map;
      req.set_shard_id(r->partitioner->shard_ids()[i]);
      tessera::v1::UpdateShardMapResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
      ctx.set_wait_for_ready(true);
      results[i] = FromGrpcStatus(r->StubFor(static_cast<uint32_t>(i))->UpdateShardMap(&ctx, req, &resp));
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : results) RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

absl::StatusOr<tessera::v1::TableSpec> KvClient::GetTableSpec(const std::string& table) {
  {
    absl::MutexLock lock(&mu_);
    auto it = specs_.find(table);
    if (it != specs_.end()) return it->second;
  }
  absl::Status last = absl::NotFoundError(absl::StrCat("table '", table, "' does not exist"));
  for (const auto& st : ServerStatus()) {
    if (!st.ok()) {
      last = st.status();
      continue;
    }
    for (const auto& t : st->tables()) {
      if (t.name() == table) {
        absl::MutexLock lock(&mu_);
        specs_[table] = t.spec();
        return t.spec();
      }
    }
  }
  return last;
}

KvClientStats KvClient::stats() const {
  KvClientStats s;
  s.rpcs = rpcs_.load();
  s.retries = retries_.load();
  s.duplicate_pushes = duplicates_.load();
  s.map_refreshes = refreshes_.load();
  return s;
}

}  // namespace tessera::client
