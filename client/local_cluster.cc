#include "client/local_cluster.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cli.h"
#include "client/coordinator_client.h"
#include "common/job_json.h"
#include "common/process.h"
#include "common/rpc.h"
#include "common/subprocess.h"

namespace tessera::client {

using namespace tessera::v1;  // NOLINT

namespace {

std::atomic<int> g_signal{0};

std::string Tail(const std::string& path, int lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string l; std::getline(in, l);) all.push_back(l);
  std::string out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size(); ++i) {
    out += "    " + all[i] + "\n";
  }
  return out;
}

struct Child {
  std::unique_ptr<Subprocess> process;
  std::string log;
  std::string role;
};

class LocalCluster {
 public:
  explicit LocalCluster(const LocalOptions& o) : o_(o), bin_(ExecutableDir()) {}
  ~LocalCluster() { StopAll(); }

  absl::Status Prepare() {
    if (o_.work_dir.empty()) {
      auto dir = MakeTempDir("tessera-local");
      if (!dir.ok()) return dir.status();
      dir_ = *dir;
      temporary_ = true;
    } else {
      dir_ = o_.work_dir;
      std::error_code ec;
      std::filesystem::create_directories(dir_, ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir_, ": ", ec.message()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int> StartDaemon(const std::string& binary, const std::string& name, std::vector<std::string> args) {
    const std::string port_file = absl::StrCat(dir_, "/", name, ".port");
    std::remove(port_file.c_str());
    SubprocessOptions opts;
    opts.binary = absl::StrCat(bin_, "/", binary);
    opts.args = {"--host=127.0.0.1", "--port=0", absl::StrCat("--port_file=", port_file),
                 absl::StrCat("--log_level=", o_.log_level)};
    opts.args.insert(opts.args.end(), args.begin(), args.end());
    opts.log_file = absl::StrCat(dir_, "/", name, ".log");
    auto p = Subprocess::Start(opts);
    if (!p.ok()) return p.status();
    children_.push_back({std::move(p).value(), opts.log_file, name});
    auto port = WaitForPortFile(port_file, absl::Seconds(60), children_.back().process.get());
    if (!port.ok()) {
      return absl::Status(port.status().code(),
                          absl::StrCat(port.status().message(), "\n  last lines of ", opts.log_file, ":\n",
                                       Tail(opts.log_file, 10)));
    }
    return *port;
  }

  absl::Status StartWorker(int i, uint64_t job_id) {
    SubprocessOptions opts;
    opts.binary = absl::StrCat(bin_, "/tessera-worker");
    opts.args = {absl::StrCat("--coordinator=", coordinator_), absl::StrCat("--job=", job_id),
                 absl::StrCat("--worker_id=w", i), absl::StrCat("--threads=", o_.worker_threads),
                 absl::StrCat("--log_level=", o_.log_level == "warn" ? "info" : o_.log_level)};
    opts.log_file = absl::StrCat(dir_, "/worker-", i, ".log");
    auto p = Subprocess::Start(opts);
    if (!p.ok()) return p.status();
    children_.push_back({std::move(p).value(), opts.log_file, absl::StrCat("worker-", i)});
    return absl::OkStatus();
  }

  void StopAll() {
    // Workers first, then servers, then the coordinator: each gets SIGTERM and a grace period.
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      if (it->process->Running()) it->process->Stop(absl::Seconds(5));
    }
  }

  // Children that died unexpectedly (exit code != 0), for the error report.
  std::string DeadChildren() {
    std::string out;
    for (auto& c : children_) {
      if (!c.process->Running() && c.process->exit_code().value_or(0) != 0) {
        absl::StrAppend(&out, "  ", c.role, " exited with code ", *c.process->exit_code(), "; last lines of ", c.log,
                        ":\n", Tail(c.log, 8));
      }
    }
    return out;
  }

  bool WorkersRunning() {
    for (auto& c : children_) {
      if (absl::StartsWith(c.role, "worker") && c.process->Running()) return true;
    }
    return false;
  }

  const std::string& dir() const { return dir_; }
  bool temporary() const { return temporary_; }
  std::string coordinator_;

 private:
  const LocalOptions o_;
  const std::string bin_;
  std::string dir_;
  bool temporary_ = false;
  std::vector<Child> children_;
};

void WriteReport(const std::string& path, const JobStatus& j, double wall, const LocalOptions& o) {
  std::string out = "{\n";
  auto field = [&](const std::string& k, const std::string& v, bool last = false) {
    absl::StrAppend(&out, "  \"", k, "\": ", v, last ? "\n" : ",\n");
  };
  field("job", absl::StrCat("\"", j.name(), "\""));
  field("model", absl::StrCat("\"", j.spec().model().type(), "\""));
  field("state", absl::StrCat("\"", JobState_Name(j.state()), "\""));
  field("servers", absl::StrCat(o.servers));
  field("workers", absl::StrCat(o.workers));
  field("consistency", absl::StrCat("\"", j.spec().training().consistency(), "\""));
  field("epochs", absl::StrCat(j.epoch_summaries_size()));
  field("examples", absl::StrCat(j.examples_done()));
  field("examples_per_sec", absl::StrFormat("%.1f", j.examples_per_sec()));
  field("wall_seconds", absl::StrFormat("%.3f", wall));
  if (!j.epoch_summaries().empty()) {
    field("final_train_loss", absl::StrFormat("%.6f", j.epoch_summaries(j.epoch_summaries_size() - 1).mean_loss()));
  }
  field("leases_expired", absl::StrCat(j.leases_expired()));
  field("server_restarts", absl::StrCat(j.server_restarts()));
  field("updates_rolled_back", absl::StrCat(j.updates_rolled_back()));
  field("max_clock_gap", absl::StrCat(j.max_clock_gap()));
  if (!j.evaluations().empty()) {
    const auto& e = j.evaluations(j.evaluations_size() - 1);
    field("test_examples", absl::StrCat(e.examples()));
    field("test_accuracy", absl::StrFormat("%.6f", e.accuracy()));
    field("test_logloss", absl::StrFormat("%.6f", e.logloss()));
    if (e.has_auc()) field("test_auc", absl::StrFormat("%.6f", e.auc()));
  }
  std::string losses = "[";
  for (int i = 0; i < j.epoch_summaries_size(); ++i) {
    absl::StrAppendFormat(&losses, "%s%.6f", i ? ", " : "", j.epoch_summaries(i).mean_loss());
  }
  field("train_loss_per_epoch", losses + "]");
  std::string evals = "[";
  for (int i = 0; i < j.evaluations_size(); ++i) {
    const auto& e = j.evaluations(i);
    absl::StrAppendFormat(&evals, "%s{\"epoch\": %u, \"accuracy\": %.6f, \"logloss\": %.6f%s}", i ? ", " : "",
                          e.epoch() + 1, e.accuracy(), e.logloss(),
                          e.has_auc() ? absl::StrFormat(", \"auc\": %.6f", e.auc()) : "");
  }
  field("evaluations", evals + "]", true);
  out += "}\n";
  std::ofstream f(path);
  f << out;
}

}  // namespace

int RunLocal(const LocalOptions& o) {
  const absl::Time start = absl::Now();
  if (o.servers < 1 || o.workers < 1) {
    std::fprintf(stderr, "tessera local: --servers and --workers must be at least 1\n");
    return 2;
  }
  auto spec = ReadJobSpecFile(o.spec_path);
  if (!spec.ok()) {
    std::fprintf(stderr, "tessera local: %s\n", std::string(spec.status().message()).c_str());
    return 2;
  }
  if (spec->training().num_workers() == 0) spec->mutable_training()->set_num_workers(o.workers);

  // Ctrl-C / SIGTERM: note it and let the loop below stop everything in order.
  std::thread([] {
    const int sig = WaitForShutdownSignal();
    g_signal = sig;
  }).detach();

  LocalCluster cluster(o);
  if (auto s = cluster.Prepare(); !s.ok()) {
    std::fprintf(stderr, "tessera local: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "tessera local: %s\n", what.c_str());
    const std::string dead = cluster.DeadChildren();
    if (!dead.empty()) std::fprintf(stderr, "%s", dead.c_str());
    std::fprintf(stderr, "tessera local: logs are in %s\n", cluster.dir().c_str());
    return 1;
  };

  std::printf("tessera local: %s — %s on %s, %d server%s + %d worker%s, logs in %s\n", spec->name().c_str(),
              spec->model().type().c_str(), spec->data().train().c_str(), o.servers, o.servers == 1 ? "" : "s",
              o.workers, o.workers == 1 ? "" : "s", cluster.dir().c_str());
  std::fflush(stdout);
  auto cport = cluster.StartDaemon(
      "tessera-coordinator", "coordinator",
      {absl::StrCat("--state_dir=", cluster.dir(), "/coordinator"), "--heartbeat_interval=200ms",
       "--heartbeat_timeout=3s", "--lease_timeout=10s"});
  if (!cport.ok()) return fail(std::string(cport.status().message()));
  cluster.coordinator_ = absl::StrCat("127.0.0.1:", *cport);
  // Servers start in parallel: each registers with the coordinator before writing its port file.
  std::vector<absl::StatusOr<int>> sports;
  for (int i = 0; i < o.servers; ++i) {
    sports.push_back(cluster.StartDaemon("tessera-server", absl::StrCat("server-", i),
                                         {absl::StrCat("--coordinator=", cluster.coordinator_),
                                          absl::StrCat("--data_dir=", cluster.dir(), "/server-", i)}));
    if (!sports.back().ok()) return fail(std::string(sports.back().status().message()));
  }
  CoordinatorClient coord(cluster.coordinator_, {.rpc_timeout = absl::Seconds(10), .retry_for = absl::Seconds(10)});
  auto submitted = coord.SubmitJob(*spec);
  if (!submitted.ok()) return fail(std::string(submitted.status().message()));
  const uint64_t job_id = submitted->job_id();
  for (int i = 0; i < o.workers; ++i) {
    if (auto s = cluster.StartWorker(i, job_id); !s.ok()) return fail(std::string(s.message()));
  }
  std::printf("cluster up in %.1fs: coordinator %s, job %lu submitted\n", absl::ToDoubleSeconds(absl::Now() - start),
              cluster.coordinator_.c_str(), static_cast<unsigned long>(job_id));
  std::fflush(stdout);

  const bool tty = isatty(STDOUT_FILENO);
  absl::Time last_line = absl::InfinitePast();
  absl::Time started_training = absl::Now();
  JobStatus job;
  absl::Time workers_gone = absl::InfiniteFuture();
  for (;;) {
    if (g_signal != 0) {
      std::printf("\ntessera local: interrupted; stopping the cluster\n");
      (void)coord.CancelJob(job_id);
      cluster.StopAll();
      return 130;
    }
    auto j = coord.GetJob(job_id);
    if (!j.ok()) return fail(std::string(j.status().message()));
    job = *j;
    const bool over = job.state() == SUCCEEDED || job.state() == FAILED || job.state() == CANCELLED;
    const std::string line = ProgressLine(job, absl::Now() - started_training);
    if (tty) {
      std::printf("\r\033[K%s", line.c_str());
      std::fflush(stdout);
    } else if (absl::Now() - last_line >= absl::Seconds(2) || over) {
      std::printf("[%6.1fs] %s\n", absl::ToDoubleSeconds(absl::Now() - start), line.c_str());
      std::fflush(stdout);
      last_line = absl::Now();
    }
    if (over) break;
    // Every worker gone with the job unfinished: it cannot finish.
    if (!cluster.WorkersRunning()) {
      if (workers_gone == absl::InfiniteFuture()) workers_gone = absl::Now();
      if (absl::Now() - workers_gone > absl::Seconds(3)) {
        if (tty) std::printf("\n");
        return fail("every worker exited before the job finished");
      }
    }
    absl::SleepFor(absl::Milliseconds(tty ? 250 : 500));
  }
  if (tty) std::printf("\n");
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("%s", FormatJob(job).c_str());
  if (!job.evaluations().empty()) {
    const auto& e = job.evaluations(job.evaluations_size() - 1);
    std::printf("final test accuracy %.4f, logloss %.4f%s on %lu examples; %.0f examples/s; %.1f s wall\n",
                e.accuracy(), e.logloss(), e.has_auc() ? absl::StrFormat(", AUC %.4f", e.auc()).c_str() : "",
                static_cast<unsigned long>(e.examples()), job.examples_per_sec(), wall);
  }
  if (!o.report_path.empty()) {
    WriteReport(o.report_path, job, wall, o);
    std::printf("report written to %s\n", o.report_path.c_str());
  }
  cluster.StopAll();
  if (job.state() != SUCCEEDED) {
    return fail(absl::StrCat("job ", job_id, " ", JobState_Name(job.state()), ": ", job.message()));
  }
  if (cluster.temporary()) RemoveTree(cluster.dir());
  return 0;
}

}  // namespace tessera::client
