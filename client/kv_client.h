// KvClient: the worker-side API of Tessera's parameter store (in the spirit of ps-lite's KVWorker).
//
// One logical Pull / Push / PushPull names a table and either sparse keys or a dense range. The
// client normalizes the keys (sorts, de-duplicates, sums the gradients of repeated keys), splits the
// request by the shard map into one RPC per shard, sends them in parallel on reused channels, and
// puts the answers back in the caller's key order. Every RPC attempt has a deadline; retryable
// failures (server down or restarting, deadline, stale shard map) are retried with exponential
// backoff and re-routed with a refreshed map until `total_timeout`, then the call fails with the
// last error. Pushes carry (worker_id, sequence) so a retried push is applied exactly once.
//
// Blocking calls wait for the result. *Async calls return a KvFuture at once; the caller's key,
// gradient and output buffers must stay alive and untouched until the future is ready.
//
// Pull, Push and PushPull go over the wire as the protobuf messages of parameter.proto, encoded
// and decoded by common/wire.h rather than the protobuf classes: large keys and gradients that are
// contiguous in the caller's buffers are handed to gRPC in place (no copy), and values are copied
// once, from the received bytes into the output buffer. A call whose request referenced the
// caller's buffers becomes ready only once gRPC has released them.
//
// Thread-safety: a KvClient is thread-safe; share one per process. Destroying it waits for the
// calls in flight to finish (each is bounded by total_timeout).
#ifndef TESSERA_CLIENT_KV_CLIENT_H_
#define TESSERA_CLIENT_KV_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/shard_map_source.h"
#include "tessera/v1/parameter.pb.h"

namespace tessera {
class DelayQueue;
class Security;
}

namespace tessera::client {

namespace internal {
struct OpState;
struct Routing;
}  // namespace internal

// The result of an asynchronous call. Copyable; all copies refer to the same call.
class KvFuture {
 public:
  KvFuture() = default;
  // Blocks until the call finished; returns its status.
  absl::Status Wait() const;
  // Waits at most `timeout`; DEADLINE_EXCEEDED if the call is still running.
  absl::Status WaitFor(absl::Duration timeout) const;
  bool Ready() const;
  bool valid() const { return state_ != nullptr; }

 private:
  friend class KvClient;
  explicit KvFuture(std::shared_ptr<internal::OpState> s) : state_(std::move(s)) {}
  std::shared_ptr<internal::OpState> state_;
};

struct KvClientOptions {
  // Deadline of each RPC attempt.
  absl::Duration rpc_timeout = absl::Seconds(10);
  // A call that has not succeeded after this long (retries included) fails with its last error.
  absl::Duration total_timeout = absl::Seconds(120);
  // First retry delay; doubles per attempt up to max_backoff, with +-25% jitter.
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  // Exactly-once identity of this client's pushes; 0 picks a random one.
  uint64_t worker_id = 0;
  int max_message_bytes = 256 << 20;
  // TCP connections per server; several help large transfers use more than one core.
  int connections_per_server = 1;
  // Prefer this address over the map's for shard i (e.g. a Unix socket for a co-located server).
  absl::flat_hash_map<uint32_t, std::string> address_overrides;
  // TLS and bearer token for every channel; plaintext when null.
  std::shared_ptr<const Security> security;
};

struct PushOptions {
  // Multiplies the table's learning rate for this push (schedules); 0 means 1.
  float learning_rate_scale = 0;
};

struct PullOptions {
  // Read the weights' moving average (tables created with optimizer.average_decay > 0), e.g. to
  // evaluate or export a model; training reads the raw weights.
  bool averaged = false;
};

// Counters of one client, for tests and progress reports.
struct KvClientStats {
  uint64_t rpcs = 0;
  uint64_t retries = 0;
  uint64_t duplicate_pushes = 0;  // pushes a server had already applied (a lost response retried)
  uint64_t map_refreshes = 0;
};

class KvClient {
 public:
  static absl::StatusOr<std::unique_ptr<KvClient>> Create(std::unique_ptr<ShardMapSource> source,
                                                          KvClientOptions options = {});
  // Convenience: a static map over `addresses` (see StaticShardMap).
  static absl::StatusOr<std::unique_ptr<KvClient>> Connect(std::vector<std::string> addresses,
                                                           KvClientOptions options = {});
  ~KvClient();
  KvClient(const KvClient&) = delete;
  KvClient& operator=(const KvClient&) = delete;

  // ---- Sparse tables. `keys` in any order, duplicates allowed. `values` / `out` hold
  // keys.size() * dim floats, row i for keys[i]; dim is out.size() / keys.size().
  absl::Status Pull(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<float> out,
                    PullOptions options = {});
  absl::Status Push(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                    PushOptions options = {});
  // Pushes `grads`, then reads the updated rows of the same keys into `out`, in one round trip.
  absl::Status PushPull(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                        absl::Span<float> out, PushOptions options = {});
  KvFuture PullAsync(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<float> out,
                     PullOptions options = {});
  KvFuture PushAsync(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                     PushOptions options = {});
  KvFuture PushPullAsync(const std::string& table, absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                         absl::Span<float> out, PushOptions options = {});

  // ---- Dense tables: elements [offset, offset + n) of the tensor, n = out.size() or grads.size().
  absl::Status PullDense(const std::string& table, uint64_t offset, absl::Span<float> out, PullOptions options = {});
  absl::Status PushDense(const std::string& table, uint64_t offset, absl::Span<const float> grads,
                         PushOptions options = {});
  absl::Status PushPullDense(const std::string& table, uint64_t offset, absl::Span<const float> grads,
                             absl::Span<float> out, PushOptions options = {});
  KvFuture PullDenseAsync(const std::string& table, uint64_t offset, absl::Span<float> out, PullOptions options = {});
  KvFuture PushDenseAsync(const std::string& table, uint64_t offset, absl::Span<const float> grads,
                          PushOptions options = {});
  KvFuture PushPullDenseAsync(const std::string& table, uint64_t offset, absl::Span<const float> grads,
                              absl::Span<float> out, PushOptions options = {});

  // ---- Administration (blocking).
  // Creates `spec` on every shard (idempotent).
  absl::Status CreateTable(const tessera::v1::TableSpec& spec);
  // Drops tables named `prefix`* on every shard.
  absl::Status DropTables(const std::string& prefix);
  // Status of every shard, in shard-id order; unreachable shards give an error status.
  std::vector<absl::StatusOr<tessera::v1::ServerStatusResponse>> ServerStatus();
  // Sends the client's current map to every shard (for static maps; the coordinator does this
  // itself in a cluster).
  absl::Status InstallShardMap();
  // Spec of `table`, fetched from a server once and cached.
  absl::StatusOr<tessera::v1::TableSpec> GetTableSpec(const std::string& table);
  // Re-reads the shard map from the source now.
  absl::Status RefreshShardMap();

  uint64_t worker_id() const { return worker_id_; }
  uint64_t shard_map_version() const;
  KvClientStats stats() const;

 private:
  struct SubRequest;
  friend struct internal::OpState;

  KvClient(std::unique_ptr<ShardMapSource> source, KvClientOptions options);
  std::shared_ptr<const internal::Routing> routing() const;
  absl::Status RefreshIfOlder(uint64_t min_version, bool force);
  absl::StatusOr<std::shared_ptr<const internal::Routing>> BuildRouting(const tessera::v1::ShardMap& map);

  KvFuture StartSparse(int kind, const std::string& table, absl::Span<const uint64_t> keys,
                       absl::Span<const float> grads, absl::Span<float> out, PushOptions options,
                       PullOptions pull_options = {});
  KvFuture StartDense(int kind, const std::string& table, uint64_t offset, absl::Span<const float> grads,
                      absl::Span<float> out, PushOptions options, PullOptions pull_options = {});
  // Splits positions [begin of op's unique keys] under `r` and sends one sub-request per shard.
  void Route(const std::shared_ptr<internal::OpState>& op, const std::shared_ptr<const internal::Routing>& r,
             std::vector<uint32_t> positions, uint64_t dense_begin, uint64_t dense_end);
  void Send(const std::shared_ptr<SubRequest>& sub);
  void OnDone(const std::shared_ptr<SubRequest>& sub, const absl::Status& status, uint64_t server_map_version);
  void Retry(const std::shared_ptr<SubRequest>& sub, const absl::Status& last, uint64_t server_map_version);

  const KvClientOptions options_;
  const uint64_t worker_id_;
  std::unique_ptr<ShardMapSource> source_;
  std::unique_ptr<DelayQueue> delay_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const internal::Routing> routing_ ABSL_GUARDED_BY(mu_);
  absl::Time last_refresh_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::flat_hash_map<std::string, tessera::v1::TableSpec> specs_ ABSL_GUARDED_BY(mu_);
  absl::Mutex refresh_mu_;  // serializes map fetches

  std::atomic<uint64_t> next_sequence_{1};
  std::atomic<uint64_t> rpcs_{0}, retries_{0}, duplicates_{0}, refreshes_{0};
  // Shared with the calls, which may finish after a destructor that gave up waiting for them.
  const std::shared_ptr<std::atomic<int64_t>> in_flight_ops_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace tessera::client

#endif  // TESSERA_CLIENT_KV_CLIENT_H_
