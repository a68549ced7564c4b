// ShardStore: everything one tessera-server shard holds, independent of gRPC.
//
// It owns the tables of this shard, validates every request (table exists, kind matches, keys
// sorted and unique, lengths match the dimension, gradients finite, placement matches the shard
// map), applies pushes exactly once per (worker_id, sequence), and keeps the counters that
// ServerStatus reports. Errors are absl::Status with canonical codes and messages that name the
// offending field and value; the service converts them once, at its edge.
//
// Thread-safety: all methods are thread-safe. The table registry has its own lock; each table has
// striped row locks and an "apply gate" that checkpoints close for the length of a memory copy.
#ifndef TESSERA_SERVER_SHARD_STORE_H_
#define TESSERA_SERVER_SHARD_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/partition.h"
#include "common/window_stats.h"
#include "server/dense_table.h"
#include "server/exactly_once.h"
#include "server/sparse_table.h"
#include "tessera/v1/parameter.pb.h"

namespace tessera::server {

// Key of the absl::Status payload carrying the server's shard-map version on FAILED_PRECONDITION.
inline constexpr char kShardMapVersionPayload[] = "tessera-shard-map-version";

struct ShardStoreOptions {
  // Directory for checkpoints and the server identity; empty keeps everything in memory.
  std::string data_dir;
};

// One table of this shard: spec, optimizer, storage (sparse or dense), exactly-once state.
struct Table {
  tessera::v1::TableSpec spec;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Initializer> initializer;
  std::unique_ptr<SparseTable> sparse;  // exactly one of sparse / dense is set
  std::unique_ptr<DenseTable> dense;
  ExactlyOnceFilter filter;
  std::atomic<uint64_t> applied_pushes{0};
  // Pushes hold this shared while admitting and applying; a checkpoint holds it exclusively while
  // copying, so the copy and the exactly-once state agree.
  mutable absl::Mutex gate;
};

struct PullArgs {
  absl::string_view table;
  absl::Span<const uint64_t> keys;  // sparse
  uint64_t offset = 0;              // dense
  uint64_t length = 0;              // dense
  uint64_t shard_map_version = 0;
  bool averaged = false;  // read the weights' moving average (tables with average_decay > 0)
};

struct PushArgs {
  absl::string_view table;
  absl::Span<const uint64_t> keys;  // sparse
  uint64_t offset = 0;              // dense
  absl::Span<const float> gradients;
  uint64_t worker_id = 0;
  uint64_t sequence = 0;
  uint64_t shard_map_version = 0;
  float learning_rate_scale = 0;  // 0 = 1
};

class ShardStore {
 public:
  explicit ShardStore(ShardStoreOptions options);
  ~ShardStore();

  // Returns true if created, false if an identical table existed; ALREADY_EXISTS for a different
  // spec under the same name; INVALID_ARGUMENT for a bad spec.
  absl::StatusOr<bool> CreateTable(const tessera::v1::TableSpec& spec);
  // Drops tables whose names start with `prefix`; returns their names.
  std::vector<std::string> DropTables(absl::string_view prefix);

  // Validates, then calls alloc(n) once for the n floats of the answer and reads into the
  // returned buffer. `alloc` is not called when validation fails.
  absl::Status Pull(const PullArgs& args, absl::FunctionRef<float*(size_t)> alloc);
  // Validates and applies; returns true when the push was a duplicate (already applied).
  absl::StatusOr<bool> Push(const PushArgs& args);

  // Installs `map` if its version is newer than the current one; returns the version now held.
  // INVALID_ARGUMENT if `shard_id` is not in the map.
  absl::StatusOr<uint64_t> UpdateShardMap(const tessera::v1::ShardMap& map, uint32_t shard_id);
  uint64_t shard_map_version() const;
  uint32_t shard_id() const;

  // Fills counters, tables and rates.
  void FillStatus(tessera::v1::ServerStatusResponse* status) const;
  // Records one handled request for rates and latency.
  void RecordLatency(bool is_push, double micros);
  void CountRejected() { rejected_.fetch_add(1, std::memory_order_relaxed); }

  // The table named `name`, or nullptr. The shared_ptr keeps it alive across a concurrent drop.
  std::shared_ptr<Table> FindTable(absl::string_view name) const;
  // Tables whose names start with `prefix`.
  std::vector<std::shared_ptr<Table>> TablesWithPrefix(absl::string_view prefix) const;
  // Replaces (or adds) a table object, used by checkpoint restore.
  void PutTable(std::shared_ptr<Table> table);
  // Builds an empty table for `spec` under the current placement (validates the spec).
  absl::StatusOr<std::shared_ptr<Table>> NewTable(const tessera::v1::TableSpec& spec) const;

  const ShardStoreOptions& options() const { return options_; }

  // Until SetServing(true), Pull and Push answer UNAVAILABLE (a restarting server restores its
  // tables first); clients retry. Stores start serving.
  void SetServing(bool serving) { serving_.store(serving); }
  bool serving() const { return serving_.load(); }

 private:
  struct Placement {
    uint64_t version = 0;  // 0: no map, this server owns everything
    uint32_t shard_id = 0;
    std::shared_ptr<const Partitioner> partitioner;
  };
  Placement placement() const;
  absl::StatusOr<std::shared_ptr<Table>> Lookup(absl::string_view name) const;
  absl::Status CheckVersion(const Placement& p, uint64_t request_version) const;
  absl::Status CheckKeys(const Placement& p, absl::Span<const uint64_t> keys, const Table& t) const;
  absl::Status CheckDense(const Placement& p, const Table& t, uint64_t offset, uint64_t length) const;

  const ShardStoreOptions options_;
  const absl::Time started_;

  mutable absl::Mutex tables_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Table>> tables_ ABSL_GUARDED_BY(tables_mu_);

  mutable absl::Mutex placement_mu_;
  Placement placement_ ABSL_GUARDED_BY(placement_mu_);

  std::atomic<bool> serving_{true};
  std::atomic<uint64_t> pulls_{0}, pushes_{0}, duplicates_{0}, keys_pulled_{0}, keys_pushed_{0},
      rejected_{0};
  WindowStats pull_stats_, push_stats_;
};

}  // namespace tessera::server

#endif  // TESSERA_SERVER_SHARD_STORE_H_
