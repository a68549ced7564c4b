#include "server/shard_store.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/float_codec.h"
#include "common/hash.h"
#include "common/process.h"
#include "common/status.h"

namespace tessera::server {

using tessera::v1::TableSpec;

namespace {

absl::Status ValidateName(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("table name is empty");
  if (name.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat("table name '", name.substr(0, 32), "...' is ",
                                                   name.size(), " characters long (at most 128)"));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == '/';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("table name '", name, "' has character '", std::string(1, c),
                       "' (allowed: letters, digits and . _ - /)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSpec(const TableSpec& spec) {
  RETURN_IF_ERROR(ValidateName(spec.name()));
  switch (spec.kind()) {
    case TableSpec::SPARSE:
      if (spec.dim() < 1 || spec.dim() > 65536) {
        return absl::InvalidArgumentError(
            absl::StrCat("table '", spec.name(), "': dim = ", spec.dim(), " (sparse tables need 1..65536)"));
      }
      if (spec.size() != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("table '", spec.name(), "': size = ", spec.size(), " is only for dense tables"));
      }
      break;
    case TableSpec::DENSE:
      if (spec.size() < 1 || spec.size() > (uint64_t{1} << 34)) {
        return absl::InvalidArgumentError(absl::StrCat("table '", spec.name(), "': size = ", spec.size(),
                                                       " (dense tables need 1..2^34 elements)"));
      }
      if (spec.dim() > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("table '", spec.name(), "': dim = ", spec.dim(), " is only for sparse tables"));
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("table '", spec.name(), "': kind must be SPARSE or DENSE"));
  }
  return absl::OkStatus();
}

absl::Status StaleMap(uint64_t mine, uint64_t theirs, absl::string_view what) {
  absl::Status s = absl::FailedPreconditionError(
      absl::StrCat(what, " (request shard map version ", theirs, ", server version ", mine, ")"));
  s.SetPayload(kShardMapVersionPayload, absl::Cord(absl::StrCat(mine)));
  return s;
}

}  // namespace

ShardStore::ShardStore(ShardStoreOptions options) : options_(std::move(options)), started_(absl::Now()) {}
ShardStore::~ShardStore() = default;

ShardStore::Placement ShardStore::placement() const {
  absl::MutexLock lock(&placement_mu_);
  return placement_;
}

uint64_t ShardStore::shard_map_version() const { return placement().version; }
uint32_t ShardStore::shard_id() const { return placement().shard_id; }

absl::StatusOr<std::shared_ptr<Table>> ShardStore::NewTable(const TableSpec& spec) const {
  RETURN_IF_ERROR(ValidateSpec(spec));
  auto table = std::make_shared<Table>();
  table->spec = spec;
  {
    auto opt = Optimizer::Create(spec.optimizer());
    if (!opt.ok()) return Annotate(opt.status(), absl::StrCat("table '", spec.name(), "'"));
    table->optimizer = std::move(opt).value();
  }
  {
    auto init = Initializer::Create(spec.initializer());
    if (!init.ok()) return Annotate(init.status(), absl::StrCat("table '", spec.name(), "'"));
    table->initializer = std::make_unique<Initializer>(*init);
  }
  if (spec.kind() == TableSpec::SPARSE) {
    table->sparse = std::make_unique<SparseTable>(spec.dim(), table->optimizer.get(),
                                                  table->initializer.get(),
                                                  HashBytes(spec.name().data(), spec.name().size()));
  } else {
    const Placement p = placement();
    DenseRange range{0, spec.size()};
    if (p.version != 0) {
      range = p.partitioner->DenseRangeForIndex(spec.size(), p.partitioner->IndexOf(p.shard_id));
    }
    table->dense = std::make_unique<DenseTable>(range, table->optimizer.get(), table->initializer.get());
  }
  return table;
}

absl::StatusOr<bool> ShardStore::CreateTable(const TableSpec& spec) {
  if (auto existing = FindTable(spec.name())) {
    if (google::protobuf::util::MessageDifferencer::Equals(existing->spec, spec)) return false;
    return absl::AlreadyExistsError(absl::StrCat("table '", spec.name(),
                                                 "' already exists with a different spec: ",
                                                 existing->spec.ShortDebugString()));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Table> table, NewTable(spec));
  absl::MutexLock lock(&tables_mu_);
  auto [it, inserted] = tables_.emplace(spec.name(), std::move(table));
  if (!inserted && !google::protobuf::util::MessageDifferencer::Equals(it->second->spec, spec)) {
    return absl::AlreadyExistsError(absl::StrCat("table '", spec.name(), "' already exists with a different spec"));
  }
  return inserted;
}

std::vector<std::string> ShardStore::DropTables(absl::string_view prefix) {
  std::vector<std::string> dropped;
  std::vector<std::shared_ptr<Table>> doomed;  // destroyed outside the lock
  absl::MutexLock lock(&tables_mu_);
  for (auto it = tables_.begin(); it != tables_.end();) {
    if (absl::StartsWith(it->first, prefix)) {
      dropped.push_back(it->first);
      doomed.push_back(std::move(it->second));
      tables_.erase(it++);
    } else {
      ++it;
    }
  }
  std::sort(dropped.begin(), dropped.end());
  return dropped;
}

std::shared_ptr<Table> ShardStore::FindTable(absl::string_view name) const {
  absl::MutexLock lock(&tables_mu_);
  auto it = tables_.find(name);
  return it == tables_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Table>> ShardStore::TablesWithPrefix(absl::string_view prefix) const {
  std::vector<std::shared_ptr<Table>> out;
  absl::MutexLock lock(&tables_mu_);
  for (const auto& [name, t] : tables_) {
    if (absl::StartsWith(name, prefix)) out.push_back(t);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->spec.name() < b->spec.name(); });
  return out;
}

void ShardStore::PutTable(std::shared_ptr<Table> table) {
  std::shared_ptr<Table> old;
  absl::MutexLock lock(&tables_mu_);
  auto& slot = tables_[table->spec.name()];
  old = std::move(slot);
  slot = std::move(table);
}

absl::StatusOr<std::shared_ptr<Table>> ShardStore::Lookup(absl::string_view name) const {
  if (!serving_.load()) return absl::UnavailableError("this server is restoring its tables; retry shortly");
  if (name.empty()) return absl::InvalidArgumentError("request names no table");
  auto t = FindTable(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat("table '", name, "' does not exist on shard ", placement().shard_id));
  }
  return t;
}

absl::Status ShardStore::CheckVersion(const Placement& p, uint64_t request_version) const {
  if (request_version == 0 || request_version == p.version) return absl::OkStatus();
  if (p.version == 0) {
    return absl::UnavailableError(absl::StrCat("this server has no shard map yet (request has version ",
                                               request_version, "); retry shortly"));
  }
  if (request_version < p.version) return StaleMap(p.version, request_version, "stale shard map");
  return absl::UnavailableError(absl::StrCat("this server has shard map version ", p.version,
                                             ", older than the request's ", request_version, "; retry shortly"));
}

absl::Status ShardStore::CheckKeys(const Placement& p, absl::Span<const uint64_t> keys, const Table& t) const {
  if (keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("request for sparse table '", t.spec.name(), "' has no keys"));
  }
  for (size_t i = 1; i < keys.size(); ++i) {
    if (keys[i] <= keys[i - 1]) {
      if (keys[i] == keys[i - 1]) {
        return absl::InvalidArgumentError(absl::StrCat("duplicate key ", keys[i], " at positions ", i - 1,
                                                       " and ", i, " (keys must be sorted and unique)"));
      }
      return absl::InvalidArgumentError(absl::StrCat("keys must be sorted ascending: keys[", i, "] = ", keys[i],
                                                     " follows keys[", i - 1, "] = ", keys[i - 1]));
    }
  }
  if (p.version != 0) {
    const Partitioner& part = *p.partitioner;
    for (size_t i = 0; i < keys.size(); ++i) {
      const uint32_t owner = part.ShardIdForKey(keys[i]);
      if (owner != p.shard_id) {
        return StaleMap(p.version, 0,
                        absl::StrCat("key ", keys[i], " belongs to shard ", owner, ", not shard ", p.shard_id));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ShardStore::CheckDense(const Placement& p, const Table& t, uint64_t offset, uint64_t length) const {
  const uint64_t size = t.spec.size();
  if (length == 0) {
    return absl::InvalidArgumentError(absl::StrCat("request for dense table '", t.spec.name(), "' has length 0"));
  }
  if (offset >= size || length > size - offset) {
    return absl::OutOfRangeError(absl::StrCat("range [", offset, ", ", offset + length, ") is outside dense table '",
                                              t.spec.name(), "' of size ", size));
  }
  const DenseRange& r = t.dense->range();
  if (offset < r.begin || offset + length > r.end) {
    return StaleMap(p.version, 0,
                    absl::StrCat("range [", offset, ", ", offset + length, ") of table '", t.spec.name(),
                                 "' is not inside this shard's range [", r.begin, ", ", r.end, ")"));
  }
  return absl::OkStatus();
}

absl::Status ShardStore::Pull(const PullArgs& args, absl::FunctionRef<float*(size_t)> alloc) {
  ASSIGN_OR_RETURN(std::shared_ptr<Table> t, Lookup(args.table));
  const Placement p = placement();
  RETURN_IF_ERROR(CheckVersion(p, args.shard_map_version));
  if (args.averaged && t->optimizer->average_slot() < 0) {
    return absl::FailedPreconditionError(absl::StrCat("table '", t->spec.name(),
                                                      "' keeps no weight average: create it with "
                                                      "optimizer.average_decay > 0 to pull averaged weights"));
  }
  if (t->sparse) {
    if (args.offset != 0 || args.length != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("table '", t->spec.name(), "' is sparse: offset and length must be 0"));
    }
    RETURN_IF_ERROR(CheckKeys(p, args.keys, *t));
    t->sparse->Pull(args.keys, alloc(args.keys.size() * t->spec.dim()), args.averaged);
    keys_pulled_.fetch_add(args.keys.size(), std::memory_order_relaxed);
  } else {
    if (!args.keys.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("table '", t->spec.name(), "' is dense: keys must be empty"));
    }
    RETURN_IF_ERROR(CheckDense(p, *t, args.offset, args.length));
    t->dense->Pull(args.offset, args.length, alloc(args.length), args.averaged);
    keys_pulled_.fetch_add(args.length, std::memory_order_relaxed);
  }
  pulls_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::StatusOr<bool> ShardStore::Push(const PushArgs& args) {
  ASSIGN_OR_RETURN(std::shared_ptr<Table> t, Lookup(args.table));
  const Placement p = placement();
  RETURN_IF_ERROR(CheckVersion(p, args.shard_map_version));
  const TableSpec& spec = t->spec;
  const float scale = args.learning_rate_scale == 0 ? 1.0f : args.learning_rate_scale;
  if (!std::isfinite(scale) || scale < 0) {
    return absl::InvalidArgumentError(absl::StrCat("learning_rate_scale = ", args.learning_rate_scale,
                                                   " must be a finite number >= 0"));
  }
  uint64_t count;
  if (t->sparse) {
    if (args.offset != 0) {
      return absl::InvalidArgumentError(absl::StrCat("table '", spec.name(), "' is sparse: offset must be 0"));
    }
    RETURN_IF_ERROR(CheckKeys(p, args.keys, *t));
    const uint64_t want = args.keys.size() * spec.dim();
    if (args.gradients.size() != want) {
      return absl::InvalidArgumentError(absl::StrCat("gradients hold ", args.gradients.size(), " floats but ",
                                                     args.keys.size(), " keys x dim ", spec.dim(), " of table '",
                                                     spec.name(), "' need ", want));
    }
    count = args.keys.size();
  } else {
    if (!args.keys.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("table '", spec.name(), "' is dense: keys must be empty"));
    }
    RETURN_IF_ERROR(CheckDense(p, *t, args.offset, args.gradients.size()));
    count = args.gradients.size();
  }
  const int64_t bad = FirstNonFinite(args.gradients);
  if (bad >= 0) {
    const float v = args.gradients[bad];
    const char* what = std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
    if (t->sparse) {
      return absl::InvalidArgumentError(absl::StrCat("gradient for key ", args.keys[bad / spec.dim()], " element ",
                                                     bad % spec.dim(), " is ", what, "; nothing was applied"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("gradient for element ", args.offset + bad, " is ", what, "; nothing was applied"));
  }

  absl::ReaderMutexLock gate(&t->gate);
  if (args.worker_id != 0 && !t->filter.Admit(args.worker_id, args.sequence)) {
    duplicates_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (t->sparse) {
    t->sparse->Push(args.keys, args.gradients.data(), scale);
  } else {
    t->dense->Push(args.offset, args.gradients.data(), args.gradients.size(), scale);
  }
  t->applied_pushes.fetch_add(1, std::memory_order_relaxed);
  pushes_.fetch_add(1, std::memory_order_relaxed);
  keys_pushed_.fetch_add(count, std::memory_order_relaxed);
  return false;
}

absl::StatusOr<uint64_t> ShardStore::UpdateShardMap(const tessera::v1::ShardMap& map, uint32_t shard_id) {
  std::vector<uint32_t> ids;
  bool found = false;
  for (const auto& s : map.shards()) {
    ids.push_back(s.shard_id());
    found |= s.shard_id() == shard_id;
  }
  if (!found) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard id ", shard_id, " is not in shard map version ", map.version()));
  }
  if (map.version() == 0) return absl::InvalidArgumentError("shard map version must be > 0");
  auto part = std::make_shared<const Partitioner>(std::move(ids), map.virtual_nodes());
  absl::MutexLock lock(&placement_mu_);
  if (map.version() > placement_.version) {
    placement_.version = map.version();
    placement_.shard_id = shard_id;
    placement_.partitioner = std::move(part);
  }
  return placement_.version;
}

void ShardStore::RecordLatency(bool is_push, double micros) {
  (is_push ? push_stats_ : pull_stats_).Record(micros);
}

void ShardStore::FillStatus(tessera::v1::ServerStatusResponse* status) const {
  const Placement p = placement();
  status->set_shard_id(p.shard_id);
  status->set_shard_map_version(p.version);
  for (const auto& t : TablesWithPrefix("")) {
    auto* ts = status->add_tables();
    ts->set_name(t->spec.name());
    ts->set_kind(t->spec.kind());
    ts->set_optimizer(t->optimizer->name());
    *ts->mutable_spec() = t->spec;
    ts->set_applied_pushes(t->applied_pushes.load());
    if (t->sparse) {
      ts->set_dim(t->spec.dim());
      ts->set_rows(t->sparse->num_rows());
      ts->set_bytes(t->sparse->memory_bytes());
    } else {
      ts->set_dim(1);
      ts->set_rows(t->dense->range().size());
      ts->set_bytes(t->dense->memory_bytes());
      ts->set_range_begin(t->dense->range().begin);
      ts->set_range_end(t->dense->range().end);
    }
  }
  status->set_pulls(pulls_.load());
  status->set_pushes(pushes_.load());
  status->set_duplicate_pushes(duplicates_.load());
  status->set_keys_pulled(keys_pulled_.load());
  status->set_keys_pushed(keys_pushed_.load());
  status->set_rejected_requests(rejected_.load());
  const absl::Time now = absl::Now();
  status->set_pull_rate(pull_stats_.Rate(now));
  status->set_push_rate(push_stats_.Rate(now));
  std::array<uint64_t, WindowStats::kBuckets> counts{};
  pull_stats_.AddTo(&counts, now);
  push_stats_.AddTo(&counts, now);
  status->set_latency_p50_us(WindowStats::QuantileOf(counts, 0.5));
  status->set_latency_p99_us(WindowStats::QuantileOf(counts, 0.99));
  status->set_uptime_seconds(absl::ToDoubleSeconds(now - started_));
  status->set_resident_bytes(ResidentBytes());
}

}  // namespace tessera::server
