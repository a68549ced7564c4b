#include "worker/trainer.h"

#include <cblas.h>

#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/coordinator_client.h"
#include "client/kv_client.h"
#include "common/fault.h"
#include "common/hash.h"
#include "common/logging.h"
#include "common/status.h"
#include "worker/data_cache.h"
#include "worker/model/metrics.h"
#include "worker/model/model.h"

namespace tessera::worker {

using namespace tessera::v1;  // NOLINT

namespace {
// Thrown-away work is not an error: these tell the loop why a chunk stopped early.
absl::Status LeaseLost() { return absl::AbortedError("lease lost"); }
}  // namespace

struct Trainer::State {
  std::unique_ptr<client::CoordinatorClient> coord;
  std::unique_ptr<client::KvClient> kv;
  std::unique_ptr<Model> model;
  std::unique_ptr<DataCache> cache;
  RegisterWorkerResponse reg;
  std::string table;
  uint64_t table_size = 0;  // dense tables
  client::PullOptions eval_pull;  // evaluation reads the weights' moving average when kept
  std::string consistency;
  uint32_t staleness = 0;
  uint32_t batch_size = 128;

  // Current lease and its progress since the last report (guarded by mu).
  absl::Mutex mu;
  uint64_t lease_id ABSL_GUARDED_BY(mu) = 0;
  Progress pending ABSL_GUARDED_BY(mu);
  std::atomic<bool> lease_lost{false};
  std::atomic<bool> job_over{false};

  // Datasets already checked by Model::Validate (a cached IDX file serves many chunks).
  std::set<const data::Dataset*> validated;
  // Clock of the current epoch.
  uint32_t epoch = UINT32_MAX;
  uint64_t clock = 0;

  std::atomic<uint64_t> batches{0}, examples{0}, chunks{0}, eval_chunks{0}, leases_lost{0};
  absl::Notification stop;
  std::thread keeper;
};

Trainer::Trainer(TrainerOptions options) : options_(std::move(options)), state_(std::make_unique<State>()) {}

Trainer::~Trainer() {
  state_->stop.Notify();
  if (state_->keeper.joinable()) state_->keeper.join();
}

TrainerStats Trainer::stats() const {
  TrainerStats s;
  s.batches = state_->batches.load();
  s.examples = state_->examples.load();
  s.chunks = state_->chunks.load();
  s.eval_chunks = state_->eval_chunks.load();
  s.leases_lost = state_->leases_lost.load();
  return s;
}

namespace {

// Takes the progress accumulated since the last report.
Progress TakeProgress(absl::Mutex& mu, Progress& pending) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  absl::MutexLock lock(&mu);
  Progress p = pending;
  pending.Clear();
  return p;
}

}  // namespace

absl::Status Trainer::Run() {
  State& s = *state_;
  openblas_set_num_threads(std::max(1, options_.threads));
  client::CoordinatorClientOptions co;
  co.rpc_timeout = options_.rpc_timeout;
  co.retry_for = options_.give_up_after;
  co.security = options_.security;
  s.coord = std::make_unique<client::CoordinatorClient>(options_.coordinator, co);
  ASSIGN_OR_RETURN(s.reg, s.coord->RegisterWorker(options_.job_id, options_.name));
  const JobSpec& spec = s.reg.spec();
  if (s.reg.tables_size() != 1) return absl::InternalError("expected exactly one table per job");
  s.table = s.reg.tables(0).name();
  s.table_size = s.reg.tables(0).size();
  s.eval_pull.averaged = s.reg.tables(0).optimizer().average_decay() > 0;
  s.consistency = spec.training().consistency();
  s.staleness = spec.training().consistency() == "ssp" ? spec.training().staleness() : 0;
  s.batch_size = std::max(1u, spec.training().batch_size());
  ASSIGN_OR_RETURN(s.model, Model::Create(ModelConfigFromSpec(spec.model())));
  s.cache = std::make_unique<DataCache>(spec.data().format(), spec.model().num_features(),
                                        static_cast<int>(spec.model().num_classes()));
  client::KvClientOptions ko;
  ko.worker_id = s.reg.worker_id();
  ko.rpc_timeout = options_.rpc_timeout;
  ko.total_timeout = std::min(options_.give_up_after, absl::Minutes(2));
  ko.security = options_.security;
  ASSIGN_OR_RETURN(s.kv, client::KvClient::Create(s.coord->ShardMaps(), ko));
  spdlog::info("worker '{}' joined job {} as rank {} (id {:x}); model {}, table {}, {} consistency",
               options_.name, options_.job_id, s.reg.rank(), s.reg.worker_id(), spec.model().type(), s.table,
               s.consistency);

  // Lease keeper: renews the current lease and reports progress a few times per lease timeout.
  const absl::Duration renew_every =
      std::clamp(absl::Milliseconds(s.reg.lease_timeout_ms()) / 4, absl::Milliseconds(100), absl::Seconds(2));
  s.keeper = std::thread([this, &s, renew_every] {
    while (!s.stop.WaitForNotificationWithTimeout(renew_every)) {
      uint64_t lease;
      {
        absl::MutexLock lock(&s.mu);
        lease = s.lease_id;
      }
      if (lease == 0) continue;
      RenewLeaseRequest req;
      req.set_job_id(options_.job_id);
      req.set_worker_id(s.reg.worker_id());
      req.set_lease_id(lease);
      *req.mutable_progress() = TakeProgress(s.mu, s.pending);
      auto r = s.coord->RenewLease(req);
      if (!r.ok()) {
        // Not reported: put it back for the next attempt.
        absl::MutexLock lock(&s.mu);
        s.pending.set_examples(s.pending.examples() + req.progress().examples());
        s.pending.set_loss_sum(s.pending.loss_sum() + req.progress().loss_sum());
        s.pending.set_batches(s.pending.batches() + req.progress().batches());
        continue;
      }
      if (r->result() == RenewLeaseResponse::LEASE_LOST) s.lease_lost = true;
      if (r->result() == RenewLeaseResponse::JOB_OVER) {
        s.lease_lost = true;
        s.job_over = true;
      }
    }
  });

  absl::Time last_success = absl::Now();
  absl::Duration backoff = absl::Milliseconds(200);
  for (;;) {
    auto lease = s.coord->AcquireLease(options_.job_id, s.reg.worker_id());
    if (!lease.ok()) return lease.status();
    if (lease->kind() == AcquireLeaseResponse::DONE) {
      spdlog::info("worker '{}': job {} is {}; {} batches, {} examples, {} chunks trained, {} evaluated",
                   options_.name, options_.job_id, JobState_Name(lease->job_state()), s.batches.load(),
                   s.examples.load(), s.chunks.load(), s.eval_chunks.load());
      return absl::OkStatus();
    }
    if (lease->kind() == AcquireLeaseResponse::WAIT) {
      absl::SleepFor(absl::Milliseconds(std::max(10u, lease->retry_after_ms())));
      continue;
    }
    const bool eval = lease->kind() == AcquireLeaseResponse::EVAL;
    {
      absl::MutexLock lock(&s.mu);
      s.lease_id = lease->lease_id();
      s.pending.Clear();
    }
    s.lease_lost = false;
    if (!eval && lease->epoch() != s.epoch) {
      s.epoch = lease->epoch();
      s.clock = 0;
    }

    auto data = s.cache->Load(lease->chunk());
    absl::Status st = data.status();
    if (st.ok() && !s.validated.count(data->data.get())) {
      st = s.model->Validate(*data->data);
      if (st.ok()) s.validated.insert(data->data.get());
    }
    if (!st.ok()) {
      // Bad data is the job's problem, not this worker's: fail the job with the file:line message.
      spdlog::error("worker '{}': {}", options_.name, st);
      (void)s.coord->FailJob(options_.job_id, s.reg.worker_id(), std::string(st.message()));
      return st;
    }
    EvalAccumulator acc;
    st = eval ? EvalChunk(*data, &acc) : TrainChunk(*lease, *data);
    {
      absl::MutexLock lock(&s.mu);
      s.lease_id = 0;
    }
    if (absl::IsAborted(st)) {
      ++s.leases_lost;
      if (s.job_over) continue;  // the next AcquireLease says DONE
      spdlog::warn("worker '{}': lease {} on chunk {} was lost; moving on", options_.name, lease->lease_id(),
                   lease->chunk().index());
      continue;
    }
    if (!st.ok()) {
      if (absl::Now() - last_success > options_.give_up_after) {
        return Annotate(st, absl::StrCat("giving up after ", absl::FormatDuration(options_.give_up_after),
                                         " without progress"));
      }
      spdlog::warn("worker '{}': chunk {} failed: {}; retrying in {}", options_.name, lease->chunk().index(), st,
                   absl::FormatDuration(backoff));
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(5));
      continue;
    }
    CompleteLeaseRequest req;
    req.set_job_id(options_.job_id);
    req.set_worker_id(s.reg.worker_id());
    req.set_lease_id(lease->lease_id());
    *req.mutable_progress() = TakeProgress(s.mu, s.pending);
    if (eval) {
      EvalPartial* e = req.mutable_eval();
      e->set_count(acc.count());
      e->set_correct(acc.correct());
      e->set_logloss_sum(acc.logloss_sum());
      e->mutable_positives()->Add(acc.positives().begin(), acc.positives().end());
      e->mutable_negatives()->Add(acc.negatives().begin(), acc.negatives().end());
    }
    auto done = s.coord->CompleteLease(req);
    if (!done.ok()) return done.status();
    (eval ? s.eval_chunks : s.chunks)++;
    last_success = absl::Now();
    backoff = absl::Milliseconds(200);
  }
}

absl::Status Trainer::TrainChunk(const AcquireLeaseResponse& lease, const ChunkData& chunk) {
  State& s = *state_;
  const JobSpec& spec = s.reg.spec();
  const data::Dataset shuffled =
      ShuffledCopy(*chunk.data, chunk.begin, chunk.end,
                   HashCombine(HashCombine(spec.training().seed(), lease.epoch()), lease.chunk().index()));
  const size_t n = shuffled.size();
  const size_t bs = s.batch_size;
  const size_t num_batches = (n + bs - 1) / bs;
  client::PushOptions push_opts;
  push_opts.learning_rate_scale = lease.learning_rate_scale();
  const bool async = s.consistency == "async";
  const bool bsp = s.consistency == "bsp";
  const Model& model = *s.model;

  // Two slots so the next batch's pull and the previous batch's push overlap this batch's compute.
  struct Slot {
    std::vector<uint64_t> keys;
    std::vector<float> params, grads;
    client::KvFuture pull, push;
  };
  Slot slots[2];
  auto batch_of = [&](size_t b) { return data::Batch{&shuffled, b * bs, std::min(n, (b + 1) * bs)}; };
  auto start_pull = [&](size_t b, Slot& slot) {
    const data::Batch batch = batch_of(b);
    if (model.sparse()) {
      model.Keys(batch, &slot.keys);
      slot.params.resize(model.NumParams(slot.keys.size()));
      slot.pull = s.kv->PullAsync(s.table, slot.keys, absl::MakeSpan(slot.params));
    } else {
      slot.params.resize(s.table_size);
      slot.pull = s.kv->PullDenseAsync(s.table, 0, absl::MakeSpan(slot.params));
    }
  };
  auto wait_clock = [&](ClockRequest::Wait wait) -> absl::Status {
    for (;;) {
      if (s.lease_lost) return LeaseLost();
      ClockRequest req;
      req.set_job_id(options_.job_id);
      req.set_worker_id(s.reg.worker_id());
      req.set_epoch(s.epoch);
      req.set_clock(s.clock);
      req.set_wait(wait);
      req.set_timeout_ms(wait == ClockRequest::NONE ? 0 : 2000);
      ASSIGN_OR_RETURN(ClockResponse r, s.coord->Clock(req));
      if (r.granted() || r.job_over()) return absl::OkStatus();
    }
  };
  auto drain = [&]() {
    absl::Status first;
    for (Slot& slot : slots) {
      for (client::KvFuture* f : {&slot.pull, &slot.push}) {
        if (f->valid()) {
          absl::Status st = f->Wait();
          if (first.ok()) first = st;
          *f = client::KvFuture();
        }
      }
    }
    return first;
  };

  if (async && num_batches > 0) start_pull(0, slots[0]);
  for (size_t b = 0; b < num_batches; ++b) {
    if (s.lease_lost) {
      (void)drain();
      return LeaseLost();
    }
    Slot& cur = slots[b % 2];
    Slot& next = slots[(b + 1) % 2];
    const data::Batch batch = batch_of(b);
    if (auto f = TESSERA_FAULT("worker.batch"); f.fired()) {
      (void)drain();
      return f.status();
    }
    if (!async) {
      RETURN_IF_ERROR(wait_clock(ClockRequest::COMPUTE));
      start_pull(b, cur);
    }
    if (absl::Status st = cur.pull.Wait(); !st.ok()) {
      (void)drain();
      return st;
    }
    cur.pull = client::KvFuture();
    if (async && b + 1 < num_batches) {
      // The next slot's buffers are reused: its previous push must have finished.
      if (next.push.valid()) {
        if (absl::Status st = next.push.Wait(); !st.ok()) {
          (void)drain();
          return st;
        }
        next.push = client::KvFuture();
      }
      start_pull(b + 1, next);
    }
    cur.grads.resize(cur.params.size());
    const double loss = model.Gradient(batch, cur.keys, cur.params, absl::MakeSpan(cur.grads));
    if (options_.batch_delay > absl::ZeroDuration()) absl::SleepFor(options_.batch_delay);
    if (bsp) RETURN_IF_ERROR(wait_clock(ClockRequest::PUSH));
    cur.push = model.sparse() ? s.kv->PushAsync(s.table, cur.keys, cur.grads, push_opts)
                              : s.kv->PushDenseAsync(s.table, 0, cur.grads, push_opts);
    if (!async) {
      // ssp / bsp: the clock may only advance once the push is applied.
      absl::Status st = cur.push.Wait();
      cur.push = client::KvFuture();
      RETURN_IF_ERROR(st);
    }
    ++s.clock;
    if (bsp) RETURN_IF_ERROR(wait_clock(ClockRequest::NONE));
    ++s.batches;
    s.examples += batch.size();
    absl::MutexLock lock(&s.mu);
    s.pending.set_examples(s.pending.examples() + batch.size());
    s.pending.set_loss_sum(s.pending.loss_sum() + loss * batch.size());
    s.pending.set_batches(s.pending.batches() + 1);
  }
  return drain();
}

absl::Status Trainer::EvalChunk(const ChunkData& chunk, EvalAccumulator* acc) {
  State& s = *state_;
  const Model& model = *s.model;
  const size_t bs = std::max<size_t>(s.batch_size, 1024);
  std::vector<uint64_t> keys;
  std::vector<float> params, preds;
  std::vector<float> labels;
  for (size_t b = chunk.begin; b < chunk.end; b += bs) {
    if (s.lease_lost) return LeaseLost();
    const data::Batch batch{chunk.data.get(), b, std::min(chunk.end, b + bs)};
    if (model.sparse()) {
      model.Keys(batch, &keys);
      params.resize(model.NumParams(keys.size()));
      RETURN_IF_ERROR(s.kv->Pull(s.table, keys, absl::MakeSpan(params), s.eval_pull));
    } else if (params.empty()) {
      params.resize(s.table_size);  // dense weights do not change during evaluation: pull once
      RETURN_IF_ERROR(s.kv->PullDense(s.table, 0, absl::MakeSpan(params), s.eval_pull));
    }
    model.Predict(batch, keys, params, &preds);
    labels.assign(chunk.data->labels.begin() + batch.begin, chunk.data->labels.begin() + batch.end);
    acc->Add(preds, labels, model.num_outputs());
    absl::MutexLock lock(&s.mu);
    s.pending.set_examples(s.pending.examples() + batch.size());
  }
  return absl::OkStatus();
}

}  // namespace tessera::worker
