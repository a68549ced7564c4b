#include "client/cli.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "common/data/idx.h"
#include "common/data/write.h"
#include "common/job_json.h"

namespace tessera::client {

using namespace tessera::v1;  // NOLINT

namespace {

// Status queries answer at once or fail; changes retry a restarting coordinator for a while.
CoordinatorClientOptions Quick(const CliOptions& o) {
  return {.rpc_timeout = absl::Seconds(5), .retry_for = absl::ZeroDuration(), .security = o.security};
}
CoordinatorClientOptions Patient(const CliOptions& o) {
  return {.rpc_timeout = absl::Seconds(10), .retry_for = absl::Seconds(30), .security = o.security};
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tessera: %s\n", std::string(s.message()).c_str());
  return 1;
}

bool ParseJobId(const std::string& text, uint64_t* id) {
  return absl::SimpleAtoi(text, id) && *id > 0;
}

std::string Thousands(uint64_t n) {
  std::string s = absl::StrCat(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

// A plain text table with columns padded to their widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const {
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& r : rows_)
      for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
    std::string out;
    for (const auto& r : rows_) {
      std::string line;
      for (size_t i = 0; i < r.size(); ++i) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
      }
      out += line + "\n";
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string Ago(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  const double s = absl::ToDoubleSeconds(absl::Now() - absl::FromUnixMillis(unix_ms));
  return s < 0.05 ? "now" : absl::StrFormat("%.1fs ago", s);
}

std::string LastEval(const JobStatus& j) {
  if (j.evaluations().empty()) return "-";
  const auto& e = j.evaluations(j.evaluations_size() - 1);
  return e.has_auc() ? absl::StrFormat("acc %.4f auc %.4f", e.accuracy(), e.auc())
                     : absl::StrFormat("acc %.4f", e.accuracy());
}

}  // namespace

std::string HumanBytes(uint64_t b) {
  if (b < 1024) return absl::StrCat(b, " B");
  if (b < (1 << 20)) return absl::StrFormat("%.1f KiB", b / 1024.0);
  if (b < (1ull << 30)) return absl::StrFormat("%.1f MiB", b / 1048576.0);
  return absl::StrFormat("%.2f GiB", b / 1073741824.0);
}

std::string ProgressLine(const JobStatus& j, absl::Duration elapsed) {
  std::string line = absl::StrFormat("epoch %u/%u", j.epoch() + 1, std::max(1u, j.epochs()));
  if (j.phase() == "eval") {
    absl::StrAppend(&line, absl::StrFormat("  evaluating %u/%u", j.chunks_done(), j.chunks_total()));
  } else {
    absl::StrAppend(&line, absl::StrFormat("  chunk %u/%u", j.chunks_done(), j.chunks_total()));
  }
  absl::StrAppend(&line, absl::StrFormat("  %s examples  %s ex/s", Thousands(j.examples_done()),
                                         Thousands(static_cast<uint64_t>(j.examples_per_sec()))));
  if (j.recent_loss() > 0) absl::StrAppend(&line, absl::StrFormat("  loss %.4f", j.recent_loss()));
  // ETA from the fraction of all epochs done so far.
  const double per_epoch = j.chunks_total() > 0 ? static_cast<double>(j.chunks_done()) / j.chunks_total() : 0;
  const double done = j.phase() == "eval" ? j.epoch() + 1.0 : j.epoch() + per_epoch;
  if (done > 0.02 && j.epochs() > 0 && j.phase() != "eval") {
    const double left = absl::ToDoubleSeconds(elapsed) * (j.epochs() - done) / done;
    absl::StrAppend(&line, absl::StrFormat("  ETA %d:%02d", static_cast<int>(left) / 60, static_cast<int>(left) % 60));
  }
  if (!j.evaluations().empty()) absl::StrAppend(&line, "  test ", LastEval(j));
  return line;
}

std::string FormatClusterStatus(const ClusterStatusResponse& st, const std::string& coordinator) {
  std::string out = absl::StrFormat("coordinator %s  shard map version %u (%d shards)  up %.0fs\n\n", coordinator,
                                    st.shard_map().version(), st.shard_map().shards_size(), st.uptime_seconds());
  Table servers({"SHARD", "ADDRESS", "STATE", "TABLES", "ROWS", "MEMORY", "PULL/S", "PUSH/S", "P99", "HEARTBEAT"});
  for (const auto& s : st.servers()) {
    uint64_t rows = 0, bytes = 0;
    for (const auto& t : s.status().tables()) {
      rows += t.rows();
      bytes += t.bytes();
    }
    servers.Add({absl::StrCat(s.shard_id()), s.address(),
                 std::string(s.alive() ? "alive" : "DEAD") + (s.in_map() ? "" : " (spare)"),
                 absl::StrCat(s.status().tables_size()), Thousands(rows), HumanBytes(bytes),
                 absl::StrFormat("%.1f", s.status().pull_rate()), absl::StrFormat("%.1f", s.status().push_rate()),
                 absl::StrFormat("%.0f us", s.status().latency_p99_us()), Ago(s.last_heartbeat_unix_ms())});
  }
  absl::StrAppend(&out, "SERVERS\n", st.servers().empty() ? "(none registered)\n" : servers.Render(), "\n");
  Table workers({"WORKER", "JOB", "RANK", "STATE", "CHUNK", "EXAMPLES", "LAST SEEN"});
  for (const auto& w : st.workers()) {
    workers.Add({w.name(), absl::StrCat(w.job_id()), absl::StrCat(w.rank()), w.alive() ? "alive" : "DEAD",
                 w.chunk() < 0 ? "-" : absl::StrCat(w.chunk()), Thousands(w.examples_done()),
                 Ago(w.last_heartbeat_unix_ms())});
  }
  absl::StrAppend(&out, "WORKERS\n", st.workers().empty() ? "(none)\n" : workers.Render(), "\n");
  Table jobs({"JOB", "NAME", "STATE", "EPOCH", "PROGRESS", "EXAMPLES/S", "LOSS", "TEST"});
  for (const auto& j : st.jobs()) {
    jobs.Add({absl::StrCat(j.job_id()), j.name(), JobState_Name(j.state()),
              absl::StrFormat("%u/%u", std::min(j.epoch() + 1, std::max(1u, j.epochs())), j.epochs()),
              absl::StrFormat("%s %u/%u", j.phase().empty() ? "chunks" : j.phase(), j.chunks_done(), j.chunks_total()),
              Thousands(static_cast<uint64_t>(j.examples_per_sec())),
              j.recent_loss() > 0 ? absl::StrFormat("%.4f", j.recent_loss()) : "-", LastEval(j)});
  }
  absl::StrAppend(&out, "JOBS\n", st.jobs().empty() ? "(none)\n" : jobs.Render());
  return out;
}

std::string FormatJob(const JobStatus& j) {
  std::string out;
  absl::StrAppendFormat(&out, "job %u  %s  %s%s\n", j.job_id(), j.name(), JobState_Name(j.state()),
                        j.message().empty() ? "" : absl::StrCat(": ", j.message()));
  absl::StrAppendFormat(&out, "model %s  optimizer %s  consistency %s  batch %u  epochs %u\n", j.spec().model().type(),
                        j.spec().optimizer().type(), j.spec().training().consistency(), j.spec().training().batch_size(),
                        j.epochs());
  absl::StrAppendFormat(&out, "tables %s\n", absl::StrJoin(j.tables(), ", "));
  absl::StrAppendFormat(&out, "progress %s\n", ProgressLine(j, absl::ZeroDuration()));
  absl::StrAppendFormat(&out, "workers %u (%u alive)  max clock gap %u  leases expired %u  server restarts %u  updates rolled back %u\n",
                        j.workers(), j.workers_alive(), j.max_clock_gap(), j.leases_expired(), j.server_restarts(),
                        j.updates_rolled_back());
  for (const auto& e : j.epoch_summaries()) {
    absl::StrAppendFormat(&out, "  epoch %u: %s examples, mean loss %.4f, %.1f s\n", e.epoch() + 1,
                          Thousands(e.examples()), e.mean_loss(), e.seconds());
  }
  for (const auto& e : j.evaluations()) {
    absl::StrAppendFormat(&out, "  test after epoch %u: accuracy %.4f, logloss %.4f%s (%s examples)\n", e.epoch() + 1,
                          e.accuracy(), e.logloss(), e.has_auc() ? absl::StrFormat(", AUC %.4f", e.auc()) : "",
                          Thousands(e.examples()));
  }
  for (const auto& c : j.checkpoints()) {
    absl::StrAppendFormat(&out, "  checkpoint %u: %s, epoch %u, %d chunks done, %s\n", c.checkpoint_id(),
                          c.complete() ? "complete" : "INCOMPLETE", c.epoch() + 1, c.chunks_done_size(),
                          absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(c.time_unix_ms()),
                                           absl::LocalTimeZone()));
  }
  return out;
}

int CmdStatus(const CliOptions& o) {
  CoordinatorClient c(o.coordinator, Quick(o));
  auto st = c.ClusterStatus();
  if (!st.ok()) return Fail(st.status());
  std::fputs((o.json ? ToJson(*st) + "\n" : FormatClusterStatus(*st, o.coordinator)).c_str(), stdout);
  return 0;
}

namespace {
// Follows a job until it ends, one progress line every second; returns the exit code.
int FollowJob(CoordinatorClient& c, uint64_t id) {
  const absl::Time start = absl::Now();
  std::string last;
  for (;;) {
    auto j = c.GetJob(id);
    if (!j.ok()) return Fail(j.status());
    const bool over = j->state() == SUCCEEDED || j->state() == FAILED || j->state() == CANCELLED;
    const std::string line = ProgressLine(*j, absl::Now() - start);
    if (line != last) {
      std::printf("[%5.1fs] %s\n", absl::ToDoubleSeconds(absl::Now() - start), line.c_str());
      std::fflush(stdout);
      last = line;
    }
    if (over) {
      std::printf("%s", FormatJob(*j).c_str());
      return j->state() == SUCCEEDED ? 0 : 1;
    }
    absl::SleepFor(absl::Seconds(1));
  }
}
}  // namespace

int CmdSubmit(const CliOptions& o, const std::string& spec_path) {
  auto spec = ReadJobSpecFile(spec_path);
  if (!spec.ok()) return Fail(spec.status());
  CoordinatorClient c(o.coordinator, Patient(o));
  auto r = c.SubmitJob(*spec);
  if (!r.ok()) return Fail(r.status());
  if (o.json) {
    std::printf("%s\n", ToJson(r->status()).c_str());
  } else {
    std::printf("%lu\n", static_cast<unsigned long>(r->job_id()));
  }
  std::fflush(stdout);
  return o.wait ? FollowJob(c, r->job_id()) : 0;
}

int CmdJobs(const CliOptions& o) {
  CoordinatorClient c(o.coordinator, Quick(o));
  auto r = c.ListJobs();
  if (!r.ok()) return Fail(r.status());
  if (o.json) {
    std::printf("%s\n", ToJson(*r).c_str());
    return 0;
  }
  Table t({"JOB", "NAME", "STATE", "MODEL", "EPOCH", "EXAMPLES", "TEST"});
  for (const auto& j : r->jobs()) {
    t.Add({absl::StrCat(j.job_id()), j.name(), JobState_Name(j.state()), j.spec().model().type(),
           absl::StrFormat("%u/%u", std::min(j.epoch() + 1, std::max(1u, j.epochs())), j.epochs()),
           Thousands(j.examples_done()), LastEval(j)});
  }
  std::fputs(r->jobs().empty() ? "(no jobs)\n" : t.Render().c_str(), stdout);
  return 0;
}

int CmdJob(const CliOptions& o, const std::string& id_text) {
  uint64_t id;
  if (!ParseJobId(id_text, &id)) return Fail(absl::InvalidArgumentError(absl::StrCat("'", id_text, "' is not a job id")));
  CoordinatorClient c(o.coordinator, Quick(o));
  if (o.wait) return FollowJob(c, id);
  auto j = c.GetJob(id);
  if (!j.ok()) return Fail(j.status());
  std::fputs((o.json ? ToJson(*j) + "\n" : FormatJob(*j)).c_str(), stdout);
  return 0;
}

int CmdCancel(const CliOptions& o, const std::string& id_text) {
  uint64_t id;
  if (!ParseJobId(id_text, &id)) return Fail(absl::InvalidArgumentError(absl::StrCat("'", id_text, "' is not a job id")));
  CoordinatorClient c(o.coordinator, Patient(o));
  auto j = c.CancelJob(id);
  if (!j.ok()) return Fail(j.status());
  std::printf("job %lu %s\n", static_cast<unsigned long>(id), JobState_Name(j->state()).c_str());
  return 0;
}

int CmdCheckpoint(const CliOptions& o) {
  if (o.job_id == 0) return Fail(absl::InvalidArgumentError("checkpoint needs --job=ID"));
  CoordinatorClient c(o.coordinator, Patient(o));
  auto info = c.Checkpoint(o.job_id);
  if (!info.ok()) return Fail(info.status());
  if (o.json) {
    std::printf("%s\n", ToJson(*info).c_str());
  } else {
    std::printf("checkpoint %lu of job %lu complete on %d shards\n", static_cast<unsigned long>(info->checkpoint_id()),
                static_cast<unsigned long>(o.job_id), info->shards_done_size());
  }
  return 0;
}

int CmdRestore(const CliOptions& o) {
  if (o.job_id == 0) return Fail(absl::InvalidArgumentError("restore needs --job=ID"));
  CoordinatorClient c(o.coordinator, Patient(o));
  auto info = c.Restore(o.job_id, o.checkpoint_id);
  if (!info.ok()) return Fail(info.status());
  std::printf("job %lu rolled back to checkpoint %lu (epoch %u, %d chunks done)\n",
              static_cast<unsigned long>(o.job_id), static_cast<unsigned long>(info->checkpoint_id()),
              info->epoch() + 1, info->chunks_done_size());
  return 0;
}

int CmdConvert(const std::vector<std::string>& args, int positive_class, uint64_t limit) {
  if (args.size() != 4) return Fail(absl::InvalidArgumentError("usage: tessera convert IMAGES LABELS OUT.libsvm"));
  auto data = data::ReadIdx(args[1], args[2], 0, limit == 0 ? UINT64_MAX : limit);
  if (!data.ok()) return Fail(data.status());
  if (auto s = data::WriteLibsvm(*data, args[3], positive_class); !s.ok()) return Fail(s);
  std::printf("wrote %zu examples (%lu features%s) to %s\n", data->size(), static_cast<unsigned long>(data->num_features),
              positive_class >= 0 ? absl::StrCat(", label 1 = class ", positive_class).c_str() : "", args[3].c_str());
  return 0;
}

}  // namespace tessera::client
