#include "server/coordinator/coordinator.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <thread>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/hash.h"
#include "common/logging.h"
#include "common/status.h"
#include "server/coordinator/job_spec.h"
#include "server/coordinator/state_file.h"
#include "worker/model/metrics.h"

namespace tessera::coordinator {

using namespace tessera::v1;  // NOLINT: the coordinator's own message types

namespace {
constexpr uint32_t kPending = 0, kLeased = 1, kDone = 2;
constexpr uint32_t kWaitRetryMs = 200;

absl::Status JobNotFound(uint64_t job_id) {
  return absl::NotFoundError(absl::StrCat("job ", job_id, " does not exist"));
}

// Marks a worker seen now.
void Touch(WorkerRecord* w) {
  w->set_last_seen_unix_ms(absl::ToUnixMillis(absl::Now()));
  w->set_alive(true);
}

// The job id of a table named "job-<id>/...", or 0.
uint64_t JobIdOfTable(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, "job-")) return 0;
  const size_t slash = name.find('/');
  uint64_t id = 0;
  if (slash == absl::string_view::npos || !absl::SimpleAtoi(name.substr(0, slash), &id)) return 0;
  return id;
}

int64_t ToMs(absl::Time t) { return absl::ToUnixMillis(t); }
absl::Time FromMs(int64_t ms) { return absl::FromUnixMillis(ms); }

// Deterministic Fisher-Yates shuffle of 0..n-1.
std::vector<uint32_t> Shuffled(uint32_t n, uint64_t seed) {
  std::vector<uint32_t> order(n);
  for (uint32_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = seed;
  for (uint32_t i = n; i > 1; --i) {
    state = Mix64(state);
    const uint32_t j = static_cast<uint32_t>(state % i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

Evaluation ToEvaluation(const EvalPartial& e, uint32_t epoch) {
  Evaluation ev;
  ev.set_epoch(epoch);
  ev.set_examples(e.count());
  if (e.count() > 0) {
    ev.set_accuracy(static_cast<double>(e.correct()) / e.count());
    ev.set_logloss(e.logloss_sum() / e.count());
  }
  if (e.positives_size() > 0) {
    auto acc = worker::EvalAccumulator::FromParts(
        e.count(), e.correct(), e.logloss_sum(), std::vector<uint64_t>(e.positives().begin(), e.positives().end()),
        std::vector<uint64_t>(e.negatives().begin(), e.negatives().end()));
    if (acc.ok()) {
      ev.set_auc(acc->auc());
      ev.set_has_auc(true);
    }
  }
  return ev;
}

void MergeEval(const EvalPartial& from, EvalPartial* into) {
  into->set_count(into->count() + from.count());
  into->set_correct(into->correct() + from.correct());
  into->set_logloss_sum(into->logloss_sum() + from.logloss_sum());
  if (from.positives_size() > 0) {
    if (into->positives_size() == 0) {
      into->mutable_positives()->Resize(from.positives_size(), 0);
      into->mutable_negatives()->Resize(from.negatives_size(), 0);
    }
    for (int i = 0; i < from.positives_size() && i < into->positives_size(); ++i) {
      into->set_positives(i, into->positives(i) + from.positives(i));
    }
    for (int i = 0; i < from.negatives_size() && i < into->negatives_size(); ++i) {
      into->set_negatives(i, into->negatives(i) + from.negatives(i));
    }
  }
}
}  // namespace

// ------------------------------------------------------------------------------------------------
// Lifecycle and persistence

Coordinator::Coordinator(CoordinatorOptions options, std::unique_ptr<ServerFleet> fleet)
    : options_(std::move(options)), fleet_(std::move(fleet)), started_(absl::Now()) {}

Coordinator::~Coordinator() { (void)Flush(); }

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Open(CoordinatorOptions options,
                                                               std::unique_ptr<ServerFleet> fleet) {
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options), std::move(fleet)));
  RETURN_IF_ERROR(c->Load());
  return c;
}

absl::Status Coordinator::Load() {
  absl::MutexLock lock(&mu_);
  state_.set_virtual_nodes(options_.virtual_nodes);
  state_.set_next_job_id(1);
  state_.set_next_lease_id(1);
  if (options_.state_dir.empty()) return absl::OkStatus();
  auto loaded = ReadStateFile(StateFilePath(options_.state_dir));
  if (!loaded.ok()) {
    if (absl::IsNotFound(loaded.status())) {
      spdlog::info("no state in {}: starting a new cluster", options_.state_dir);
      return absl::OkStatus();
    }
    return loaded.status();
  }
  state_ = std::move(loaded).value();
  const absl::Time now = absl::Now();
  // Everyone gets a fresh grace period: nobody could reach us while we were down.
  for (const auto& s : state_.servers()) {
    ServerRuntime& rt = servers_[s.server_id()];
    rt.alive = true;
    rt.last_heartbeat = now;
  }
  for (auto& job : *state_.mutable_jobs()) {
    jobs_[job.status().job_id()];
    for (auto& l : *job.mutable_leases()) l.set_expires_unix_ms(ToMs(now + options_.lease_timeout));
    for (auto& w : *job.mutable_workers()) w.set_last_seen_unix_ms(ToMs(now));
  }
  spdlog::info("restored state from {}: {} servers, shard map version {}, {} jobs", options_.state_dir,
               state_.servers_size(), state_.shard_map_version(), state_.jobs_size());
  return absl::OkStatus();
}

void Coordinator::MarkDirty(bool sync) {
  dirty_ = true;
  (void)sync;  // callers that need durability call Flush() after releasing the lock
}

absl::Status Coordinator::WriteSnapshot() {
  absl::MutexLock write_lock(&write_mu_);
  CoordinatorState copy;
  {
    absl::MutexLock lock(&mu_);
    if (!dirty_) return absl::OkStatus();
    copy = state_;
    dirty_ = false;
  }
  if (options_.state_dir.empty()) return absl::OkStatus();
  absl::Status s = WriteStateFile(StateFilePath(options_.state_dir), copy);
  if (!s.ok()) {
    spdlog::error("writing coordinator state: {}", s);
    absl::MutexLock lock(&mu_);
    dirty_ = true;
  }
  return s;
}

absl::Status Coordinator::Flush() { return WriteSnapshot(); }

void Coordinator::Run(Callbacks& callbacks) {
  for (auto& cb : callbacks) cb();
  callbacks.clear();
}

// ------------------------------------------------------------------------------------------------
// Servers and the shard map

ShardMap Coordinator::BuildShardMap() const {
  ShardMap map;
  map.set_version(state_.shard_map_version());
  map.set_virtual_nodes(state_.virtual_nodes());
  std::vector<const ServerRecord*> in_map;
  for (const auto& s : state_.servers()) {
    if (s.in_map()) in_map.push_back(&s);
  }
  std::sort(in_map.begin(), in_map.end(), [](auto* a, auto* b) { return a->shard_id() < b->shard_id(); });
  for (const ServerRecord* s : in_map) {
    ShardInfo* info = map.add_shards();
    info->set_shard_id(s->shard_id());
    info->set_address(s->address());
    auto it = servers_.find(s->server_id());
    info->set_alive(it != servers_.end() && it->second.alive);
  }
  return map;
}

void Coordinator::BumpShardMap() { state_.set_shard_map_version(state_.shard_map_version() + 1); }

ShardMap Coordinator::GetShardMap() const {
  absl::MutexLock lock(&mu_);
  return BuildShardMap();
}

absl::StatusOr<RegisterServerResponse> Coordinator::RegisterServer(const RegisterServerRequest& req) {
  if (req.server_id().empty()) return absl::InvalidArgumentError("server_id is empty");
  if (req.address().empty()) return absl::InvalidArgumentError("address is empty");
  RegisterServerResponse resp;
  std::vector<std::pair<std::string, uint32_t>> push_map_to;
  ShardMap map;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    ServerRecord* rec = nullptr;
    for (auto& s : *state_.mutable_servers()) {
      if (s.server_id() == req.server_id()) rec = &s;
    }
    bool map_changed = false;
    const bool known = rec != nullptr;
    if (rec == nullptr) {
      bool busy = false;
      for (const auto& j : state_.jobs()) busy |= !JobOver(j);
      rec = state_.add_servers();
      rec->set_server_id(req.server_id());
      rec->set_shard_id(state_.next_shard_id());
      state_.set_next_shard_id(state_.next_shard_id() + 1);
      rec->set_in_map(!busy);
      map_changed = rec->in_map();
      spdlog::info("server {} at {} registered as shard {}{}", req.server_id(), req.address(), rec->shard_id(),
                   rec->in_map() ? "" : " (spare until the running jobs end)");
    } else if (rec->address() != req.address()) {
      spdlog::info("shard {} moved from {} to {}", rec->shard_id(), rec->address(), req.address());
      map_changed = rec->in_map();
    } else {
      spdlog::info("shard {} at {} registered again", rec->shard_id(), req.address());
    }
    rec->set_address(req.address());
    rec->set_capacity_bytes(req.capacity_bytes());
    ServerRuntime& rt = servers_[req.server_id()];
    rt.alive = true;
    rt.last_heartbeat = now;
    if (map_changed) BumpShardMap();
    map = BuildShardMap();
    resp.set_shard_id(rec->shard_id());
    resp.set_in_map(rec->in_map());
    *resp.mutable_shard_map() = map;
    resp.set_heartbeat_interval_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.heartbeat_interval)));
    // Tables the server lacks: a restarted server gets them back, from the latest complete checkpoint.
    if (rec->in_map()) {
      const std::set<std::string> held(req.tables().begin(), req.tables().end());
      for (auto& job : *state_.mutable_jobs()) {
        if (JobOver(job)) continue;
        const CheckpointInfo* latest = nullptr;
        for (const auto& c : job.status().checkpoints()) {
          if (c.complete() && (latest == nullptr || c.checkpoint_id() > latest->checkpoint_id())) latest = &c;
        }
        bool restored = false;
        for (const auto& t : job.tables()) {
          if (held.count(t.name())) continue;
          TableAssignment* a = resp.add_tables();
          *a->mutable_spec() = t;
          a->set_job_id(job.status().job_id());
          a->set_prefix(JobTablePrefix(job.status().job_id()));
          if (latest != nullptr) {
            a->set_checkpoint_id(latest->checkpoint_id());
            a->set_checkpoint_dir(latest->dir());
          }
          restored = true;
        }
        if (restored && known) {
          JobStatus* st = job.mutable_status();
          st->set_server_restarts(st->server_restarts() + 1);
          JobRuntime& jr = jobs_[st->job_id()];
          const uint64_t before = jr.applied_pushes[rec->shard_id()];
          uint64_t kept = 0;
          if (latest != nullptr) {
            auto it = latest->applied_pushes().find(rec->shard_id());
            if (it != latest->applied_pushes().end()) kept = it->second;
          }
          const uint64_t lost = before > kept ? before - kept : 0;
          st->set_updates_rolled_back(st->updates_rolled_back() + lost);
          jr.applied_pushes[rec->shard_id()] = kept;
          spdlog::warn("job {}: shard {} restarted; restoring {}; at least {} updates rolled back",
                       st->job_id(), rec->shard_id(),
                       latest ? absl::StrCat("checkpoint ", latest->checkpoint_id()) : "initial values", lost);
        }
      }
    }
    if (map_changed) {
      for (const auto& s : state_.servers()) {
        if (s.in_map() && s.server_id() != req.server_id() && servers_[s.server_id()].alive) {
          push_map_to.emplace_back(s.address(), s.shard_id());
        }
      }
    }
    MarkDirty(true);
  }
  RETURN_IF_ERROR(Flush());
  for (const auto& [address, shard] : push_map_to) {
    absl::Status s = fleet_->UpdateShardMap(address, map, shard);
    if (!s.ok()) spdlog::warn("pushing shard map {} to shard {}: {}", map.version(), shard, s);
  }
  return resp;
}

ServerHeartbeatResponse Coordinator::ServerHeartbeat(const ServerHeartbeatRequest& req) {
  ServerHeartbeatResponse resp;
  absl::MutexLock lock(&mu_);
  ++counters_.heartbeats;
  const ServerRecord* rec = nullptr;
  for (const auto& s : state_.servers()) {
    if (s.server_id() == req.server_id()) rec = &s;
  }
  if (rec == nullptr) {
    resp.set_reregister(true);
    return resp;
  }
  ServerRuntime& rt = servers_[req.server_id()];
  if (!rt.alive) spdlog::info("shard {} at {} is alive again", rec->shard_id(), rec->address());
  rt.alive = true;
  rt.last_heartbeat = absl::Now();
  rt.status = req.status();
  for (const auto& t : req.status().tables()) {
    const uint64_t job_id = JobIdOfTable(t.name());
    if (job_id != 0) jobs_[job_id].applied_pushes[rec->shard_id()] = t.applied_pushes();
  }
  resp.set_shard_id(rec->shard_id());
  if (rec->in_map() && req.shard_map_version() < state_.shard_map_version()) *resp.mutable_shard_map() = BuildShardMap();
  return resp;
}

// ------------------------------------------------------------------------------------------------
// Jobs

JobRecord* Coordinator::FindJob(uint64_t job_id) {
  for (auto& j : *state_.mutable_jobs()) {
    if (j.status().job_id() == job_id) return &j;
  }
  return nullptr;
}

WorkerRecord* Coordinator::FindWorker(JobRecord& job, uint64_t worker_id) {
  for (auto& w : *job.mutable_workers()) {
    if (w.worker_id() == worker_id) return &w;
  }
  return nullptr;
}

bool Coordinator::JobOver(const JobRecord& job) const {
  const JobState s = job.status().state();
  return s == SUCCEEDED || s == FAILED || s == CANCELLED;
}

bool Coordinator::WorkerAlive(const WorkerRecord& w, absl::Time now) const {
  return w.alive() && now - FromMs(w.last_seen_unix_ms()) < options_.lease_timeout;
}

absl::StatusOr<SubmitJobResponse> Coordinator::SubmitJob(JobSpec spec) {
  ApplyDefaults(&spec);
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  ASSIGN_OR_RETURN(JobData data, SplitJobData(spec));

  uint64_t job_id;
  std::vector<std::string> addresses;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& s : state_.servers()) {
      if (!s.in_map()) continue;
      if (!servers_[s.server_id()].alive) {
        return absl::UnavailableError(absl::StrCat("shard ", s.shard_id(), " at ", s.address(),
                                                   " is down; the job's tables cannot be created"));
      }
      addresses.push_back(s.address());
    }
    if (addresses.empty()) return absl::FailedPreconditionError("no servers have registered yet");
    job_id = state_.next_job_id();
    state_.set_next_job_id(job_id + 1);
    MarkDirty(true);
  }
  RETURN_IF_ERROR(Flush());  // the id is never handed out twice
  ASSIGN_OR_RETURN(std::vector<TableSpec> tables, JobTables(spec, job_id));
  const std::string prefix = JobTablePrefix(job_id);

  // Create the tables everywhere; on any failure remove them everywhere, so nothing is half-created.
  std::vector<absl::Status> results(addresses.size());
  {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < addresses.size(); ++i) {
      threads.emplace_back([&, i] {
        results[i] = fleet_->DropTables(addresses[i], prefix);  // leftovers of a crash mid-submit
        for (const auto& t : tables) {
          if (results[i].ok()) results[i] = fleet_->CreateTable(addresses[i], t);
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  for (const auto& r : results) {
    if (!r.ok()) {
      for (const auto& a : addresses) (void)fleet_->DropTables(a, prefix);
      return Annotate(r, "creating the job's tables");
    }
  }

  SubmitJobResponse resp;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = state_.add_jobs();
    JobStatus* st = job->mutable_status();
    st->set_job_id(job_id);
    st->set_name(spec.name());
    st->set_state(PENDING);
    *st->mutable_spec() = spec;
    for (const auto& t : tables) st->add_tables(t.name());
    st->set_epochs(spec.training().epochs());
    st->set_examples_per_epoch(data.train_examples);
    st->set_submit_time_unix_ms(ToMs(absl::Now()));
    for (auto& c : data.train) *job->add_chunks() = std::move(c);
    for (auto& c : data.test) *job->add_eval_chunks() = std::move(c);
    for (const auto& t : tables) *job->add_tables() = t;
    job->set_next_checkpoint_id(1);
    job->set_last_checkpoint_unix_ms(ToMs(absl::Now()));
    jobs_[job_id];
    Callbacks none;
    StartEpoch(*job, 0, &none);
    ++counters_.jobs_submitted;
    resp.set_job_id(job_id);
    FillStatus(*job, resp.mutable_status());
    MarkDirty(true);
    spdlog::info("job {} '{}' submitted: model {}, {} training chunks, {} test chunks, {} epochs, {}", job_id,
                 spec.name(), spec.model().type(), job->chunks_size(), job->eval_chunks_size(),
                 spec.training().epochs(), spec.training().consistency());
  }
  RETURN_IF_ERROR(Flush());
  return resp;
}

void Coordinator::StartEpoch(JobRecord& job, uint32_t epoch, Callbacks* wake) {
  JobStatus* st = job.mutable_status();
  st->set_epoch(epoch);
  st->set_phase("train");
  st->set_chunks_done(0);
  job.set_evaluating(false);
  const uint64_t seed = HashCombine(st->spec().training().seed(), epoch);
  const auto order = Shuffled(static_cast<uint32_t>(job.chunks_size()), seed);
  job.mutable_order()->Assign(order.begin(), order.end());
  job.mutable_chunk_state()->Clear();
  job.mutable_chunk_state()->Resize(job.chunks_size(), kPending);
  job.mutable_leases()->Clear();
  job.set_epoch_examples(0);
  job.set_epoch_loss_sum(0);
  job.set_epoch_start_unix_ms(ToMs(absl::Now()));
  JobRuntime& rt = jobs_[st->job_id()];
  rt.clocks.clear();
  rt.pulled.clear();
  rt.idle.clear();
  WakeClockWaiters(job, wake);
}

void Coordinator::StartEval(JobRecord& job, uint32_t epoch) {
  job.set_evaluating(true);
  job.set_eval_epoch(epoch);
  job.mutable_eval_state()->Clear();
  job.mutable_eval_state()->Resize(job.eval_chunks_size(), kPending);
  job.mutable_eval_accumulator()->Clear();
  job.mutable_status()->set_phase("eval");
  spdlog::info("job {}: evaluating epoch {} on {} test chunks", job.status().job_id(), epoch + 1,
               job.eval_chunks_size());
}

void Coordinator::FinishJob(JobRecord& job, JobState state, const std::string& message, Callbacks* wake) {
  if (JobOver(job)) return;
  JobStatus* st = job.mutable_status();
  st->set_state(state);
  st->set_message(message);
  st->set_end_time_unix_ms(ToMs(absl::Now()));
  st->set_phase("");
  job.mutable_leases()->Clear();
  WakeClockWaiters(job, wake);
  MarkDirty(true);
  spdlog::info("job {} {}{}{}", st->job_id(), JobState_Name(state), message.empty() ? "" : ": ", message);
}

void Coordinator::Advance(JobRecord& job, Callbacks* wake) {
  if (JobOver(job)) return;
  JobStatus* st = job.mutable_status();
  const uint32_t epochs = st->spec().training().epochs();
  if (job.evaluating()) {
    for (uint32_t s : job.eval_state()) {
      if (s != kDone) return;
    }
    Evaluation ev = ToEvaluation(job.eval_accumulator(), job.eval_epoch());
    *st->add_evaluations() = ev;
    spdlog::info("job {}: epoch {} test accuracy {:.4f}, logloss {:.4f}{} on {} examples", st->job_id(),
                 job.eval_epoch() + 1, ev.accuracy(), ev.logloss(),
                 ev.has_auc() ? absl::StrCat(", auc ", ev.auc()) : "", ev.examples());
    job.set_evaluating(false);
    if (job.eval_epoch() + 1 < epochs) {
      StartEpoch(job, job.eval_epoch() + 1, wake);
    } else {
      FinishJob(job, SUCCEEDED, "", wake);
    }
    return;
  }
  for (uint32_t s : job.chunk_state()) {
    if (s != kDone) return;
  }
  EpochSummary* sum = st->add_epoch_summaries();
  sum->set_epoch(st->epoch());
  sum->set_examples(job.epoch_examples());
  sum->set_mean_loss(job.epoch_examples() > 0 ? job.epoch_loss_sum() / job.epoch_examples() : 0.0);
  sum->set_seconds(absl::ToDoubleSeconds(absl::Now() - FromMs(job.epoch_start_unix_ms())));
  if (st->examples_per_epoch() == 0) st->set_examples_per_epoch(job.epoch_examples());
  spdlog::info("job {}: epoch {}/{} done: {} examples, mean loss {:.4f}, {:.1f} s", st->job_id(), st->epoch() + 1,
               epochs, sum->examples(), sum->mean_loss(), sum->seconds());
  const bool last = st->epoch() + 1 >= epochs;
  const bool has_test = job.eval_chunks_size() > 0;
  if (has_test && (last || st->spec().training().eval_every_epoch())) {
    StartEval(job, st->epoch());
  } else if (!last) {
    StartEpoch(job, st->epoch() + 1, wake);
  } else {
    FinishJob(job, SUCCEEDED, "", wake);
  }
  MarkDirty(false);
}

ListJobsResponse Coordinator::ListJobs() const {
  ListJobsResponse resp;
  absl::MutexLock lock(&mu_);
  for (const auto& j : state_.jobs()) FillStatus(j, resp.add_jobs());
  return resp;
}

absl::StatusOr<JobStatus> Coordinator::GetJob(uint64_t job_id) const {
  absl::MutexLock lock(&mu_);
  for (const auto& j : state_.jobs()) {
    if (j.status().job_id() == job_id) {
      JobStatus st;
      FillStatus(j, &st);
      return st;
    }
  }
  return JobNotFound(job_id);
}

absl::StatusOr<JobStatus> Coordinator::CancelJob(uint64_t job_id) {
  Callbacks wake;
  JobStatus st;
  std::vector<std::string> addresses;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    if (JobOver(*job)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id, " already ended (", JobState_Name(job->status().state()), ")"));
    }
    FinishJob(*job, CANCELLED, "cancelled by user", &wake);
    FillStatus(*job, &st);
    for (const auto& s : state_.servers()) {
      if (s.in_map()) addresses.push_back(s.address());
    }
  }
  Run(wake);
  RETURN_IF_ERROR(Flush());
  // A cancelled job's parameters are of no further use: free them (best effort; a server that is
  // down drops nothing, and its restart does not recreate tables of ended jobs).
  for (const auto& a : addresses) {
    if (absl::Status s = fleet_->DropTables(a, JobTablePrefix(job_id)); !s.ok()) {
      spdlog::warn("job {}: dropping its tables on {}: {}", job_id, a, s);
    }
  }
  return st;
}

absl::StatusOr<JobStatus> Coordinator::FailJob(const FailJobRequest& req) {
  Callbacks wake;
  JobStatus st;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(req.job_id());
    if (job == nullptr) return JobNotFound(req.job_id());
    const WorkerRecord* w = FindWorker(*job, req.worker_id());
    FinishJob(*job, FAILED, absl::StrCat(w ? w->name() : absl::StrCat("worker ", req.worker_id()), ": ", req.message()),
              &wake);
    FillStatus(*job, &st);
  }
  Run(wake);
  RETURN_IF_ERROR(Flush());
  return st;
}

void Coordinator::FillStatus(const JobRecord& job, JobStatus* out) const {
  *out = job.status();
  const absl::Time now = absl::Now();
  uint32_t alive = 0;
  for (const auto& w : job.workers()) alive += WorkerAlive(w, now) ? 1 : 0;
  out->set_workers(job.workers_size());
  out->set_workers_alive(alive);
  if (job.evaluating()) {
    out->set_chunks_total(job.eval_chunks_size());
    out->set_chunks_done(static_cast<uint32_t>(std::count(job.eval_state().begin(), job.eval_state().end(), kDone)));
  } else {
    out->set_chunks_total(job.chunks_size());
    out->set_chunks_done(static_cast<uint32_t>(std::count(job.chunk_state().begin(), job.chunk_state().end(), kDone)));
  }
  auto it = jobs_.find(job.status().job_id());
  if (it != jobs_.end() && it->second.rate_samples.size() >= 2 && !JobOver(job)) {
    const auto& first = it->second.rate_samples.front();
    const auto& last = it->second.rate_samples.back();
    const double secs = absl::ToDoubleSeconds(last.first - first.first);
    if (secs > 0.2) out->set_examples_per_sec((last.second - first.second) / secs);
  } else if (JobOver(job) && job.status().start_time_unix_ms() > 0) {
    const double secs = (job.status().end_time_unix_ms() - job.status().start_time_unix_ms()) / 1000.0;
    if (secs > 0) out->set_examples_per_sec(job.status().examples_done() / secs);
  }
}

// ------------------------------------------------------------------------------------------------
// Workers and leases

absl::StatusOr<RegisterWorkerResponse> Coordinator::RegisterWorker(const RegisterWorkerRequest& req) {
  RegisterWorkerResponse resp;
  Callbacks wake;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(req.job_id());
    if (job == nullptr) return JobNotFound(req.job_id());
    if (JobOver(*job)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", req.job_id(), " already ended (", JobState_Name(job->status().state()), ")"));
    }
    const absl::Time now = absl::Now();
    const uint32_t num_workers = job->status().spec().training().num_workers();
    std::string name = req.name().empty() ? absl::StrCat("worker-", job->workers_size()) : req.name();
    absl::BitGen gen;
    uint64_t id = 0;
    while (id == 0) id = absl::Uniform<uint64_t>(gen) >> 1;
    WorkerRecord* rec = nullptr;
    for (auto& w : *job->mutable_workers()) {
      if (w.name() == name) rec = &w;
    }
    if (rec != nullptr) {
      // The same worker restarted: its old leases go back to the queue and it keeps its rank.
      for (int i = job->leases_size() - 1; i >= 0; --i) {
        if (job->leases(i).worker_id() == rec->worker_id()) ReleaseLease(*job, i, false, &wake);
      }
      jobs_[req.job_id()].clocks.erase(rec->worker_id());
      resp.set_replaces(true);
    } else {
      // Lowest rank without a live worker (a replacement takes a dead worker's rank).
      std::set<uint32_t> taken;
      for (const auto& w : job->workers()) {
        if (WorkerAlive(w, now)) taken.insert(w.rank());
      }
      uint32_t rank = 0;
      while (taken.count(rank)) ++rank;
      if (num_workers > 0 && rank < num_workers) {
        for (auto& w : *job->mutable_workers()) {
          if (w.rank() == rank && !WorkerAlive(w, now)) {
            rec = &w;
            resp.set_replaces(true);
          }
        }
      }
      if (rec == nullptr) {
        rec = job->add_workers();
        rec->set_rank(rank);
      }
      rec->set_name(name);
    }
    rec->set_worker_id(id);
    rec->set_alive(true);
    rec->set_last_seen_unix_ms(ToMs(now));
    resp.set_worker_id(id);
    resp.set_rank(rec->rank());
    *resp.mutable_spec() = job->status().spec();
    for (const auto& t : job->tables()) *resp.add_tables() = t;
    *resp.mutable_shard_map() = BuildShardMap();
    resp.set_lease_timeout_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.lease_timeout)));
    spdlog::info("job {}: worker '{}' registered (id {:x}, rank {}{})", req.job_id(), name, id, rec->rank(),
                 resp.replaces() ? ", replacing its previous incarnation" : "");
    WakeClockWaiters(*job, &wake);
    MarkDirty(true);
  }
  Run(wake);
  RETURN_IF_ERROR(Flush());
  return resp;
}

void Coordinator::ReleaseLease(JobRecord& job, size_t i, bool done, Callbacks* wake) {
  const LeaseRecord& l = job.leases(static_cast<int>(i));
  auto* states = l.eval() ? job.mutable_eval_state() : job.mutable_chunk_state();
  if (l.chunk() < static_cast<uint32_t>(states->size())) states->Set(l.chunk(), done ? kDone : kPending);
  job.mutable_leases()->DeleteSubrange(static_cast<int>(i), 1);
  WakeClockWaiters(job, wake);
}

absl::StatusOr<AcquireLeaseResponse> Coordinator::AcquireLease(const AcquireLeaseRequest& req) {
  AcquireLeaseResponse resp;
  Callbacks wake;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(req.job_id());
    if (job == nullptr) return JobNotFound(req.job_id());
    WorkerRecord* worker = FindWorker(*job, req.worker_id());
    if (worker == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", req.worker_id(), " is not registered for job ", req.job_id(), "; register first"));
    }
    const absl::Time now = absl::Now();
    Touch(worker);
    JobStatus* st = job->mutable_status();
    resp.set_job_state(st->state());
    if (JobOver(*job)) {
      resp.set_kind(AcquireLeaseResponse::DONE);
      return resp;
    }
    if (st->state() == PENDING) {
      st->set_state(RUNNING);
      st->set_start_time_unix_ms(ToMs(now));
      spdlog::info("job {} running", st->job_id());
    }
    resp.set_job_state(st->state());
    const auto& training = st->spec().training();
    JobRuntime& rt = jobs_[st->job_id()];
    auto grant = [&](uint32_t chunk, bool eval) {
      LeaseRecord* l = job->add_leases();
      l->set_lease_id(state_.next_lease_id());
      state_.set_next_lease_id(state_.next_lease_id() + 1);
      l->set_worker_id(worker->worker_id());
      l->set_chunk(chunk);
      l->set_eval(eval);
      l->set_expires_unix_ms(ToMs(now + options_.lease_timeout));
      (eval ? job->mutable_eval_state() : job->mutable_chunk_state())->Set(chunk, kLeased);
      resp.set_kind(eval ? AcquireLeaseResponse::EVAL : AcquireLeaseResponse::TRAIN);
      resp.set_lease_id(l->lease_id());
      *resp.mutable_chunk() = eval ? job->eval_chunks(chunk) : job->chunks(chunk);
      ++counters_.leases_granted;
      if (!eval) {
        rt.idle.erase(worker->worker_id());
        rt.clocks.try_emplace(worker->worker_id(), 0);
      }
    };
    // A retried request after a lost response gets the lease it already holds.
    for (const auto& l : job->leases()) {
      if (l.worker_id() == worker->worker_id()) {
        resp.set_kind(l.eval() ? AcquireLeaseResponse::EVAL : AcquireLeaseResponse::TRAIN);
        resp.set_lease_id(l.lease_id());
        *resp.mutable_chunk() = l.eval() ? job->eval_chunks(l.chunk()) : job->chunks(l.chunk());
        resp.set_epoch(job->evaluating() ? job->eval_epoch() : st->epoch());
        resp.set_learning_rate_scale(std::pow(training.lr_decay_per_epoch(), static_cast<float>(st->epoch())));
        return resp;
      }
    }
    for (int round = 0; round < 3 && resp.kind() == AcquireLeaseResponse::KIND_UNSPECIFIED; ++round) {
      if (JobOver(*job)) {
        resp.set_kind(AcquireLeaseResponse::DONE);
        break;
      }
      if (job->evaluating()) {
        bool all_done = true;
        for (int c = 0; c < job->eval_state_size(); ++c) {
          if (job->eval_state(c) == kPending) {
            grant(c, true);
            break;
          }
          all_done &= job->eval_state(c) == kDone;
        }
        if (resp.kind() != AcquireLeaseResponse::KIND_UNSPECIFIED) break;
        if (all_done) {
          Advance(*job, &wake);
          continue;
        }
        resp.set_kind(AcquireLeaseResponse::WAIT);
        break;
      }
      const uint32_t w = training.consistency() == "bsp" ? training.num_workers() : 0;
      bool all_done = true, mine_left = false;
      for (int p = 0; p < job->order_size(); ++p) {
        const uint32_t c = job->order(p);
        const uint32_t s = job->chunk_state(c);
        all_done &= s == kDone;
        const bool mine = w == 0 || static_cast<uint32_t>(p) % w == worker->rank();
        if (!mine) continue;
        if (s == kPending) {
          grant(c, false);
          break;
        }
        mine_left |= s != kDone;
      }
      if (resp.kind() != AcquireLeaseResponse::KIND_UNSPECIFIED) break;
      if (all_done) {
        Advance(*job, &wake);
        continue;
      }
      // Nothing for this worker in this epoch: it leaves the clock set until the next one.
      (void)mine_left;
      rt.idle[worker->worker_id()] = true;
      WakeClockWaiters(*job, &wake);
      resp.set_kind(AcquireLeaseResponse::WAIT);
    }
    if (resp.kind() == AcquireLeaseResponse::KIND_UNSPECIFIED) resp.set_kind(AcquireLeaseResponse::WAIT);
    if (resp.kind() == AcquireLeaseResponse::WAIT) resp.set_retry_after_ms(kWaitRetryMs);
    if (resp.kind() == AcquireLeaseResponse::DONE) resp.set_job_state(st->state());
    resp.set_epoch(job->evaluating() ? job->eval_epoch() : st->epoch());
    resp.set_learning_rate_scale(std::pow(training.lr_decay_per_epoch(), static_cast<float>(st->epoch())));
    MarkDirty(false);
  }
  Run(wake);
  return resp;
}

void Coordinator::AddProgress(JobRecord& job, WorkerRecord* worker, const Progress& p) {
  if (p.examples() == 0 && p.batches() == 0) return;
  JobStatus* st = job.mutable_status();
  st->set_examples_done(st->examples_done() + p.examples());
  if (!job.evaluating()) {
    job.set_epoch_examples(job.epoch_examples() + p.examples());
    job.set_epoch_loss_sum(job.epoch_loss_sum() + p.loss_sum());
    if (p.examples() > 0) {
      const double mean = p.loss_sum() / p.examples();
      st->set_recent_loss(st->recent_loss() == 0 ? mean : 0.7 * st->recent_loss() + 0.3 * mean);
    }
  }
  if (worker != nullptr) worker->set_examples_done(worker->examples_done() + p.examples());
  auto& samples = jobs_[st->job_id()].rate_samples;
  const absl::Time now = absl::Now();
  samples.emplace_back(now, st->examples_done());
  while (samples.size() > 2 && now - samples.front().first > absl::Seconds(5)) samples.pop_front();
}

absl::StatusOr<RenewLeaseResponse> Coordinator::RenewLease(const RenewLeaseRequest& req) {
  RenewLeaseResponse resp;
  absl::MutexLock lock(&mu_);
  JobRecord* job = FindJob(req.job_id());
  if (job == nullptr) return JobNotFound(req.job_id());
  WorkerRecord* worker = FindWorker(*job, req.worker_id());
  if (worker != nullptr) Touch(worker);
  if (JobOver(*job)) {
    resp.set_result(RenewLeaseResponse::JOB_OVER);
    return resp;
  }
  for (auto& l : *job->mutable_leases()) {
    if (l.lease_id() == req.lease_id() && l.worker_id() == req.worker_id()) {
      l.set_expires_unix_ms(ToMs(absl::Now() + options_.lease_timeout));
      AddProgress(*job, worker, req.progress());
      resp.set_result(RenewLeaseResponse::OK);
      MarkDirty(false);
      return resp;
    }
  }
  resp.set_result(RenewLeaseResponse::LEASE_LOST);
  return resp;
}

absl::StatusOr<CompleteLeaseResponse> Coordinator::CompleteLease(const CompleteLeaseRequest& req) {
  CompleteLeaseResponse resp;
  Callbacks wake;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(req.job_id());
    if (job == nullptr) return JobNotFound(req.job_id());
    WorkerRecord* worker = FindWorker(*job, req.worker_id());
    if (worker != nullptr) Touch(worker);
    for (int i = 0; i < job->leases_size(); ++i) {
      const LeaseRecord& l = job->leases(i);
      if (l.lease_id() != req.lease_id() || l.worker_id() != req.worker_id()) continue;
      AddProgress(*job, worker, req.progress());
      if (l.eval()) MergeEval(req.eval(), job->mutable_eval_accumulator());
      ReleaseLease(*job, i, /*done=*/true, &wake);
      Advance(*job, &wake);
      resp.set_accepted(true);
      MarkDirty(false);
      break;
    }
  }
  Run(wake);
  return resp;
}

// ------------------------------------------------------------------------------------------------
// Clocks

bool Coordinator::ClockGranted(JobRecord& job, const ClockRequest& req, ClockResponse* resp) {
  const auto& training = job.status().spec().training();
  const bool bsp = training.consistency() == "bsp";
  if (training.consistency() == "async") return true;
  if (JobOver(job)) {
    resp->set_job_over(true);
    return true;
  }
  if (job.evaluating() || req.epoch() != job.status().epoch()) return true;  // that epoch is over
  const uint32_t s = bsp ? 0 : training.staleness();
  JobRuntime& rt = jobs_[job.status().job_id()];
  const absl::Time now = absl::Now();
  const WorkerRecord* me = FindWorker(job, req.worker_id());
  uint64_t min_clock = req.clock();
  bool push_turn = true;
  auto idle = [&](uint64_t worker_id) {
    auto it = rt.idle.find(worker_id);
    return it != rt.idle.end() && it->second;
  };
  auto clock_of = [&](uint64_t worker_id) {
    auto it = rt.clocks.find(worker_id);
    return it == rt.clocks.end() ? uint64_t{0} : it->second;  // not started in this epoch yet
  };
  if (bsp) {
    // Every rank takes part until it has no work left in the epoch; a rank with no worker yet, or
    // whose worker died, holds everyone back until its (replacement) worker arrives.
    const uint32_t ranks = training.num_workers();
    for (uint32_t r = 0; r < ranks; ++r) {
      const WorkerRecord* w = nullptr;
      for (const auto& cand : job.workers()) {
        if (cand.rank() == r) w = &cand;
      }
      if (w == nullptr) {
        min_clock = 0;
        push_turn = false;
        continue;
      }
      if (idle(w->worker_id())) continue;
      const bool alive = WorkerAlive(*w, now);
      const uint64_t c = alive ? clock_of(w->worker_id()) : 0;
      min_clock = std::min(min_clock, c);
      // Push of clock c: lower ranks pushed c already, and everyone pulled for c.
      if (me != nullptr && r < me->rank() && c < req.clock() + 1) push_turn = false;
      auto p = rt.pulled.find(w->worker_id());
      if (!alive || p == rt.pulled.end() || p->second < req.clock() + 1) push_turn = false;
    }
  } else {
    for (const auto& w : job.workers()) {
      if (!WorkerAlive(w, now) || idle(w.worker_id())) continue;
      min_clock = std::min(min_clock, clock_of(w.worker_id()));
    }
  }
  resp->set_min_clock(min_clock);
  if (req.wait() == ClockRequest::PUSH) return push_turn;
  if (req.wait() != ClockRequest::COMPUTE) return true;
  if (req.clock() > min_clock + s) return false;
  const uint64_t gap = req.clock() - min_clock;
  JobStatus* st = job.mutable_status();
  if (gap > st->max_clock_gap()) st->set_max_clock_gap(static_cast<uint32_t>(gap));
  return true;
}

void Coordinator::WakeClockWaiters(JobRecord& job, Callbacks* wake) {
  auto it = jobs_.find(job.status().job_id());
  if (it == jobs_.end()) return;
  auto& waiters = it->second.waiters;
  for (size_t i = 0; i < waiters.size();) {
    ClockResponse resp;
    if (ClockGranted(job, waiters[i].request, &resp)) {
      resp.set_granted(true);
      auto done = std::move(waiters[i].done);
      wake->push_back([done = std::move(done), resp] { done(resp); });
      waiters.erase(waiters.begin() + i);
    } else {
      ++i;
    }
  }
}

void Coordinator::Clock(const ClockRequest& req, std::function<void(absl::StatusOr<ClockResponse>)> done) {
  Callbacks wake;
  absl::StatusOr<ClockResponse> now_answer;
  bool answered = true;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(req.job_id());
    if (job == nullptr) {
      now_answer = JobNotFound(req.job_id());
    } else {
      WorkerRecord* worker = FindWorker(*job, req.worker_id());
      if (worker == nullptr) {
        now_answer = absl::FailedPreconditionError(absl::StrCat("worker ", req.worker_id(), " is not registered"));
      } else {
        Touch(worker);
        JobRuntime& rt = jobs_[req.job_id()];
        if (!job->evaluating() && req.epoch() == job->status().epoch()) {
          uint64_t& c = rt.clocks[req.worker_id()];
          c = std::max(c, req.clock());
          // Asking to push batch `clock` means its parameters were pulled.
          if (req.wait() == ClockRequest::PUSH) {
            uint64_t& p = rt.pulled[req.worker_id()];
            p = std::max(p, req.clock() + 1);
          }
        }
        ClockResponse resp;
        if (ClockGranted(*job, req, &resp)) {
          resp.set_granted(true);
          now_answer = resp;
        } else if (req.timeout_ms() == 0) {
          now_answer = resp;
        } else {
          rt.waiters.push_back({req, absl::Now() + absl::Milliseconds(req.timeout_ms()), std::move(done)});
          answered = false;
        }
        WakeClockWaiters(*job, &wake);
      }
    }
  }
  Run(wake);
  if (answered) done(std::move(now_answer));
}

// ------------------------------------------------------------------------------------------------
// Checkpoints

absl::StatusOr<CheckpointInfo> Coordinator::Checkpoint(uint64_t job_id) {
  CheckpointInfo info;
  std::vector<std::pair<uint32_t, std::string>> shards;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    for (const auto& s : state_.servers()) {
      if (!s.in_map()) continue;
      if (!servers_[s.server_id()].alive) {
        return absl::UnavailableError(
            absl::StrCat("shard ", s.shard_id(), " at ", s.address(), " is down; cannot take a complete checkpoint"));
      }
      shards.emplace_back(s.shard_id(), s.address());
    }
    info.set_checkpoint_id(job->next_checkpoint_id());
    job->set_next_checkpoint_id(job->next_checkpoint_id() + 1);
    info.set_time_unix_ms(ToMs(absl::Now()));
    info.set_epoch(job->evaluating() ? job->eval_epoch() + 1 : job->status().epoch());
    if (!job->evaluating()) {
      for (int c = 0; c < job->chunk_state_size(); ++c) {
        if (job->chunk_state(c) == kDone) info.add_chunks_done(c);
      }
    }
    info.set_examples_done(job->status().examples_done());
    info.set_dir(job->status().spec().checkpoint().dir());
    job->set_last_checkpoint_unix_ms(ToMs(absl::Now()));
    MarkDirty(true);
  }
  SaveCheckpointRequest req;
  req.set_prefix(JobTablePrefix(job_id));
  req.set_checkpoint_id(info.checkpoint_id());
  req.set_dir(info.dir());
  uint32_t keep = 3;
  {
    absl::MutexLock lock(&mu_);
    if (const JobRecord* job = FindJob(job_id)) keep = std::max<uint32_t>(1, job->status().spec().checkpoint().keep());
  }
  req.set_keep(keep);
  std::vector<absl::StatusOr<SaveCheckpointResponse>> results(shards.size(), absl::UnknownError(""));
  {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < shards.size(); ++i) {
      threads.emplace_back([&, i] { results[i] = fleet_->SaveCheckpoint(shards[i].second, req); });
    }
    for (auto& t : threads) t.join();
  }
  absl::Status failed;
  for (size_t i = 0; i < shards.size(); ++i) {
    if (results[i].ok()) {
      info.add_shards_done(shards[i].first);
      (*info.mutable_applied_pushes())[shards[i].first] = results[i]->applied_pushes();
    } else if (failed.ok()) {
      failed = Annotate(results[i].status(), absl::StrCat("shard ", shards[i].first));
    }
  }
  info.set_complete(failed.ok());
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(job_id);
    if (job != nullptr) {
      auto* list = job->mutable_status()->mutable_checkpoints();
      *list->Add() = info;
      // Keep the newest `keep` complete checkpoints (and drop incomplete ones older than them).
      const uint32_t keep = std::max<uint32_t>(1, job->status().spec().checkpoint().keep());
      uint32_t complete_seen = 0;
      for (int i = list->size() - 1; i >= 0; --i) {
        if (complete_seen >= keep) {
          list->DeleteSubrange(i, 1);
          continue;
        }
        if (list->Get(i).complete()) ++complete_seen;
      }
    }
    MarkDirty(true);
  }
  RETURN_IF_ERROR(Flush());
  if (!failed.ok()) return failed;
  spdlog::info("job {}: checkpoint {} complete on {} shards (epoch {}, {} chunks done)", job_id, info.checkpoint_id(),
               shards.size(), info.epoch() + 1, info.chunks_done_size());
  return info;
}

absl::StatusOr<CheckpointInfo> Coordinator::Restore(uint64_t job_id, uint64_t checkpoint_id) {
  CheckpointInfo info;
  std::vector<std::pair<uint32_t, std::string>> shards;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    const CheckpointInfo* found = nullptr;
    for (const auto& c : job->status().checkpoints()) {
      if (!c.complete()) continue;
      if (checkpoint_id == 0 ? (found == nullptr || c.checkpoint_id() > found->checkpoint_id())
                             : c.checkpoint_id() == checkpoint_id) {
        found = &c;
      }
    }
    if (found == nullptr) {
      return absl::NotFoundError(checkpoint_id == 0
                                     ? absl::StrCat("job ", job_id, " has no complete checkpoint")
                                     : absl::StrCat("job ", job_id, " has no complete checkpoint ", checkpoint_id));
    }
    info = *found;
    for (const auto& s : state_.servers()) {
      if (s.in_map()) shards.emplace_back(s.shard_id(), s.address());
    }
  }
  LoadCheckpointRequest req;
  req.set_prefix(JobTablePrefix(job_id));
  req.set_checkpoint_id(info.checkpoint_id());
  req.set_dir(info.dir());
  // Two phases: every shard verifies its files first, so a damaged part changes nothing anywhere.
  for (const bool verify : {true, false}) {
    req.set_verify_only(verify);
    std::vector<absl::Status> results(shards.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < shards.size(); ++i) {
      threads.emplace_back([&, i] { results[i] = fleet_->LoadCheckpoint(shards[i].second, req).status(); });
    }
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < shards.size(); ++i) {
      if (!results[i].ok()) {
        return Annotate(results[i], absl::StrCat(verify ? "checkpoint " : "restoring checkpoint ", info.checkpoint_id(),
                                                 " on shard ", shards[i].first,
                                                 verify ? " is damaged; nothing was changed" : ""));
      }
    }
  }
  Callbacks wake;
  {
    absl::MutexLock lock(&mu_);
    JobRecord* job = FindJob(job_id);
    if (job == nullptr) return absl::NotFoundError("job vanished");
    JobStatus* st = job->mutable_status();
    if (JobOver(*job)) {
      st->set_state(RUNNING);
      st->set_message("");
      st->set_end_time_unix_ms(0);
    }
    const uint32_t epoch = std::min(info.epoch(), st->spec().training().epochs() - 1);
    StartEpoch(*job, epoch, &wake);
    if (info.epoch() == epoch) {
      for (uint32_t c : info.chunks_done()) {
        if (c < static_cast<uint32_t>(job->chunk_state_size())) job->set_chunk_state(c, kDone);
      }
    }
    st->set_examples_done(info.examples_done());
    JobRuntime& rt = jobs_[job_id];
    for (const auto& [shard, pushes] : info.applied_pushes()) rt.applied_pushes[shard] = pushes;
    MarkDirty(true);
    spdlog::info("job {}: restored checkpoint {} (epoch {}, {} chunks done)", job_id, info.checkpoint_id(), epoch + 1,
                 info.chunks_done_size());
  }
  Run(wake);
  RETURN_IF_ERROR(Flush());
  return info;
}

// ------------------------------------------------------------------------------------------------
// Status and housekeeping

ClusterStatusResponse Coordinator::ClusterStatus() const {
  ClusterStatusResponse resp;
  absl::MutexLock lock(&mu_);
  *resp.mutable_shard_map() = BuildShardMap();
  const absl::Time now = absl::Now();
  for (const auto& s : state_.servers()) {
    ServerInfo* info = resp.add_servers();
    info->set_server_id(s.server_id());
    info->set_shard_id(s.shard_id());
    info->set_address(s.address());
    info->set_in_map(s.in_map());
    info->set_capacity_bytes(s.capacity_bytes());
    auto it = servers_.find(s.server_id());
    if (it != servers_.end()) {
      info->set_alive(it->second.alive);
      info->set_last_heartbeat_unix_ms(ToMs(it->second.last_heartbeat));
      *info->mutable_status() = it->second.status;
    }
  }
  for (const auto& job : state_.jobs()) {
    FillStatus(job, resp.add_jobs());
    if (JobOver(job)) continue;
    for (const auto& w : job.workers()) {
      WorkerInfo* wi = resp.add_workers();
      wi->set_worker_id(w.worker_id());
      wi->set_name(w.name());
      wi->set_job_id(job.status().job_id());
      wi->set_rank(w.rank());
      wi->set_alive(WorkerAlive(w, now));
      wi->set_last_heartbeat_unix_ms(w.last_seen_unix_ms());
      wi->set_examples_done(w.examples_done());
      wi->set_chunk(-1);
      for (const auto& l : job.leases()) {
        if (l.worker_id() == w.worker_id()) {
          wi->set_chunk(static_cast<int32_t>(l.chunk()));
          wi->set_lease_id(l.lease_id());
        }
      }
    }
  }
  resp.set_uptime_seconds(absl::ToDoubleSeconds(now - started_));
  return resp;
}

CoordinatorCounters Coordinator::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void Coordinator::Tick() {
  Callbacks wake;
  std::vector<uint64_t> due_checkpoints;
  std::vector<std::pair<std::string, uint32_t>> push_map_to;
  ShardMap map;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    for (const auto& s : state_.servers()) {
      ServerRuntime& rt = servers_[s.server_id()];
      if (rt.alive && now - rt.last_heartbeat > options_.heartbeat_timeout) {
        rt.alive = false;
        spdlog::warn("shard {} at {} missed heartbeats for {}: marked dead", s.shard_id(), s.address(),
                     absl::FormatDuration(now - rt.last_heartbeat));
      }
    }
    bool busy = false;
    for (auto& job : *state_.mutable_jobs()) {
      if (JobOver(job)) continue;
      busy = true;
      const uint64_t id = job.status().job_id();
      for (int i = job.leases_size() - 1; i >= 0; --i) {
        if (FromMs(job.leases(i).expires_unix_ms()) < now) {
          const LeaseRecord& l = job.leases(i);
          spdlog::warn("job {}: lease {} on {}chunk {} expired (worker {:x} silent for {}); chunk goes back to the queue",
                       id, l.lease_id(), l.eval() ? "test " : "", l.chunk(), l.worker_id(),
                       absl::FormatDuration(options_.lease_timeout));
          JobStatus* st = job.mutable_status();
          st->set_leases_expired(st->leases_expired() + 1);
          ++counters_.leases_expired;
          ReleaseLease(job, i, false, &wake);
          MarkDirty(false);
        }
      }
      for (auto& w : *job.mutable_workers()) {
        if (w.alive() && now - FromMs(w.last_seen_unix_ms()) >= options_.lease_timeout) {
          w.set_alive(false);
          spdlog::warn("job {}: worker '{}' ({:x}) silent for {}: marked dead", id, w.name(), w.worker_id(),
                       absl::FormatDuration(options_.lease_timeout));
          WakeClockWaiters(job, &wake);
          MarkDirty(false);
        }
      }
      JobRuntime& rt = jobs_[id];
      for (size_t i = 0; i < rt.waiters.size();) {
        if (rt.waiters[i].deadline <= now) {
          ClockResponse resp;
          resp.set_granted(false);
          ClockGranted(job, rt.waiters[i].request, &resp);
          auto done = std::move(rt.waiters[i].done);
          wake.push_back([done = std::move(done), resp] { done(resp); });
          rt.waiters.erase(rt.waiters.begin() + i);
        } else {
          ++i;
        }
      }
      const uint32_t every = job.status().spec().checkpoint().every_seconds();
      if (every > 0 && job.status().state() == RUNNING &&
          now - FromMs(job.last_checkpoint_unix_ms()) >= absl::Seconds(every)) {
        job.set_last_checkpoint_unix_ms(ToMs(now));
        due_checkpoints.push_back(id);
      }
    }
    // Spare servers join the map once no job is running.
    if (!busy) {
      bool joined = false;
      for (auto& s : *state_.mutable_servers()) {
        if (!s.in_map()) {
          s.set_in_map(true);
          joined = true;
          spdlog::info("spare server {} joins the shard map as shard {}", s.server_id(), s.shard_id());
        }
      }
      if (joined) {
        BumpShardMap();
        map = BuildShardMap();
        for (const auto& s : state_.servers()) {
          if (servers_[s.server_id()].alive) push_map_to.emplace_back(s.address(), s.shard_id());
        }
        MarkDirty(true);
      }
    }
  }
  Run(wake);
  for (const auto& [address, shard] : push_map_to) (void)fleet_->UpdateShardMap(address, map, shard);
  for (uint64_t id : due_checkpoints) {
    auto c = Checkpoint(id);
    if (!c.ok()) spdlog::warn("job {}: periodic checkpoint failed: {}", id, c.status());
  }
  (void)WriteSnapshot();
}

}  // namespace tessera::coordinator
