// tessera-bench: throughput, latency and memory figures of Tessera's parameter store, measured
// through KvClient against real tessera-server processes on loopback (started here, next to this
// binary) or against running servers given with --servers.
//
// Figures (JSON keys; see --help for flags):
//   dense_{push,pull}_MBps_{1MiB,64KiB}  dense SGD table, async requests kept --inflight deep
//   sparse_{push,pull}_keys_per_s         100k sorted unique keys per request, dim 8, Adagrad, into a
//                                         table already holding --prefill_rows rows
//   small_rpc_per_s                       16-byte pushes (1 key of a dim-4 table), many in flight
//   pull_p50_us, pull_p99_us              64 KiB dense pulls one at a time (client-side timing)
//   bytes_per_row                         server RSS growth per row after inserting --rows rows of
//                                         dim 8 Adagrad (raw payload 72 bytes/row)
// plus `<figure>_client_cores` / `<figure>_server_cores`: CPU seconds per second spent by this
// process and by the servers during the measurement (servers started here only), and
// `<figure>_per_cpu_s`: the figure per CPU-second of both together, which varies less than the
// figure itself when other work shares the machine.
//
// Stdout carries either a table or, with --json, exactly one JSON object; progress goes to stderr.
// Single-threaded driver; the client library's own threads do the I/O.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/kv_client.h"
#include "common/flags.h"
#include "common/process.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "tessera/v1/table.pb.h"

ABSL_FLAG(bool, json, false, "Print one JSON object with every figure on stdout (the table goes to stderr).");
ABSL_FLAG(std::string, servers, "",
          "Comma-separated host:port of running tessera-servers to measure (shard i = i-th address). Empty: start "
          "--num_servers servers here on loopback.");
ABSL_FLAG(int, num_servers, 1, "Servers to start when --servers is empty.");
ABSL_FLAG(std::string, server_binary, "", "tessera-server to start (default: the one next to this binary).");
ABSL_FLAG(std::vector<std::string>, server_args, {},
          "Extra flags for the servers started here, comma-separated (e.g. --server_args=--log_level=debug).");
ABSL_FLAG(double, seconds, 3, "Length of each throughput or latency measurement, seconds.");
ABSL_FLAG(double, warmup_seconds, 0.5, "Unmeasured warm-up before each measurement, seconds.");
ABSL_FLAG(int, repeat, 1, "Run each measurement this many times and report the median (bytes_per_row runs once).");
ABSL_FLAG(int, inflight, 0,
          "Requests kept in flight by every throughput measurement; 0 uses the per-kind defaults "
          "--dense_inflight, --sparse_inflight, --small_inflight.");
ABSL_FLAG(int, dense_inflight, 8, "Dense requests in flight (when --inflight is 0).");
ABSL_FLAG(int, sparse_inflight, 4, "Sparse 100k-key requests in flight (when --inflight is 0).");
ABSL_FLAG(int, small_inflight, 256, "Small requests in flight (when --inflight is 0).");
ABSL_FLAG(int, connections, 1, "TCP connections per server (KvClientOptions::connections_per_server).");
ABSL_FLAG(bool, unix_socket, false,
          "Reach shard 0 over a Unix-domain socket: the server started here listens on one; with --servers, "
          "give its path in --unix_socket_path.");
ABSL_FLAG(std::string, unix_socket_path, "", "Unix socket of shard 0 when --servers and --unix_socket are given.");
ABSL_FLAG(std::string, only, "",
          "Comma-separated figure names (or parts of names: 'dense', 'sparse', 'small', 'pull_p', 'bytes_per_row') "
          "to measure; empty measures everything.");
ABSL_FLAG(int64_t, rows, 10000000, "Rows inserted for bytes_per_row.");
ABSL_FLAG(int64_t, prefill_rows, 1000000, "Rows the sparse table holds before sparse_* are measured.");
ABSL_FLAG(int, sparse_batch, 100000, "Keys per sparse request.");
ABSL_FLAG(int64_t, dense_elements, 16 << 20, "Elements of the dense benchmark table (float32).");

namespace tessera::bench {
namespace {

using client::KvClient;
using client::KvClientOptions;
using client::KvFuture;
using Clock = std::chrono::steady_clock;
using tessera::v1::TableSpec;

constexpr char kDense[] = "bench.dense";
constexpr char kSparse[] = "bench.sparse";
constexpr char kSmall[] = "bench.small";
constexpr char kRows[] = "bench.rows";
constexpr char kRowsWarm[] = "bench.rows_warm";
constexpr uint32_t kSparseDim = 8;
constexpr uint32_t kSmallDim = 4;

double Since(Clock::time_point t0, Clock::time_point t1) { return std::chrono::duration<double>(t1 - t0).count(); }

// user + system CPU seconds of process `pid` (0 = this one), from /proc/<pid>/stat; -1 if unknown.
double CpuSeconds(int pid) {
  std::ifstream f(pid == 0 ? std::string("/proc/self/stat") : absl::StrCat("/proc/", pid, "/stat"));
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t p = s.rfind(')');
  if (p == std::string::npos) return -1;
  std::istringstream in(s.substr(p + 1));
  std::string skip;
  for (int field = 3; field <= 13; ++field) in >> skip;
  unsigned long long utime = 0, stime = 0;
  if (!(in >> utime >> stime)) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The 1-minute load average (other work on the machine skews every figure).
double LoadAverage() {
  std::ifstream f("/proc/loadavg");
  double one = -1;
  f >> one;
  return one;
}

// A bijective 64-bit mix (splitmix64's finalizer): distinct counters give distinct random-looking keys.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The q-quantile (nearest rank) of `v`; sorts it.
double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

// The last `max_bytes` of a file (a daemon's log, for error messages).
std::string FileTail(const std::string& path, size_t max_bytes = 2000) {
  std::ifstream f(path);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

std::string Num(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v)) && std::abs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  if (std::abs(v) >= 1000) return absl::StrFormat("%.0f", v);
  return absl::StrFormat("%.4g", v);
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

struct Figure {
  std::string key;
  double value = 0;
  std::string unit;
  int cmp = 0;  // +1: target is a minimum, -1: a maximum, 0: no target
  double target = 0;
  double client_cores = -1, server_cores = -1;
  double per_cpu_second = -1;  // median over the runs of value / (client_cores + server_cores)

  // Figure per CPU-second spent by client and servers together: steadier than the figure itself on a
  // shared machine, and what a change to the wire path should move. -1 when unknown.
  double PerCpuSecond() const { return per_cpu_second; }
  std::string TargetText() const { return cmp == 0 ? "-" : absl::StrCat(cmp > 0 ? ">= " : "<= ", Num(target)); }
  bool Met() const { return cmp == 0 || (cmp > 0 ? value >= target : value <= target); }
};

// What one throughput window measured.
struct Window {
  double seconds = 0;
  uint64_t ops = 0;
  double client_cores = -1;
  double server_cores = -1;
};

struct ServerProcess {
  std::unique_ptr<Subprocess> process;
  std::string address;
  std::string log_file;
};

class Bench {
 public:
  Bench() = default;
  ~Bench() {
    client_.reset();
    for (auto& s : servers_) s.process.reset();  // by PID: SIGTERM, then SIGKILL after 5 s
    if (!dir_.empty()) RemoveTree(dir_);
  }
  // Starts or connects to the servers, measures the figures --only asks for and prints them.
  absl::Status Run();

 private:
  absl::Status StartServers();
  absl::Status ConnectClient();
  bool Wanted(absl::string_view key) const;
  bool AnyWanted(std::initializer_list<absl::string_view> keys) const;
  int Inflight(int per_kind) const;
  double ServerCpu() const;
  absl::StatusOr<uint64_t> ServerRss();

  // Keeps `inflight` calls outstanding (issue(slot, n) starts call n in buffer slot `slot`) for the
  // warm-up and then `seconds_`; returns the measured window.
  absl::StatusOr<Window> OpenLoop(int inflight, absl::FunctionRef<KvFuture(int, uint64_t)> issue);
  // Runs OpenLoop repeat_ times and records figure `key` = median of units_per_op * ops / seconds.
  absl::Status Throughput(const std::string& key, const std::string& unit, int cmp, double target, int inflight,
                          double units_per_op, absl::FunctionRef<KvFuture(int, uint64_t)> issue);
  void Add(Figure f);

  absl::Status MeasureMemory();
  absl::Status MeasureDense();
  absl::Status MeasureSparse();
  absl::Status MeasureSmall();
  absl::Status MeasureLatency();
  void Print() const;

  std::string dir_;
  std::vector<ServerProcess> servers_;
  std::vector<std::string> addresses_;
  std::string unix_path_;
  std::unique_ptr<KvClient> client_;
  std::vector<std::string> only_;
  double seconds_ = 3, warmup_ = 0.5;
  int repeat_ = 1;
  std::vector<Figure> figures_;
  std::vector<std::pair<std::string, std::string>> info_;  // extra JSON members (already encoded values)
};

bool Bench::Wanted(absl::string_view key) const {
  if (only_.empty()) return true;
  for (const auto& o : only_) {
    if (absl::StrContains(key, o)) return true;
  }
  return false;
}

bool Bench::AnyWanted(std::initializer_list<absl::string_view> keys) const {
  for (auto k : keys) {
    if (Wanted(k)) return true;
  }
  return false;
}

int Bench::Inflight(int per_kind) const {
  const int all = absl::GetFlag(FLAGS_inflight);
  return std::max(1, all > 0 ? all : per_kind);
}

double Bench::ServerCpu() const {
  if (servers_.empty()) return -1;
  double total = 0;
  for (const auto& s : servers_) {
    const double c = CpuSeconds(s.process->pid());
    if (c < 0) return -1;
    total += c;
  }
  return total;
}

absl::StatusOr<uint64_t> Bench::ServerRss() {
  uint64_t total = 0;
  if (!servers_.empty()) {
    for (const auto& s : servers_) total += ResidentBytes(s.process->pid());
    return total;
  }
  for (auto& st : client_->ServerStatus()) {
    if (!st.ok()) return st.status();
    total += st->resident_bytes();
  }
  return total;
}

absl::Status Bench::StartServers() {
  const std::string given = absl::GetFlag(FLAGS_servers);
  if (!given.empty()) {
    for (absl::string_view a : absl::StrSplit(given, ',', absl::SkipWhitespace())) addresses_.emplace_back(a);
    if (absl::GetFlag(FLAGS_unix_socket)) {
      unix_path_ = absl::GetFlag(FLAGS_unix_socket_path);
      if (unix_path_.empty()) return absl::InvalidArgumentError("--unix_socket with --servers needs --unix_socket_path");
    }
    return absl::OkStatus();
  }
  const int n = absl::GetFlag(FLAGS_num_servers);
  if (n < 1 || n > 64) return absl::InvalidArgumentError(absl::StrCat("--num_servers=", n, " must be in 1..64"));
  std::string binary = absl::GetFlag(FLAGS_server_binary);
  if (binary.empty()) binary = ExecutableDir() + "/tessera-server";
  ASSIGN_OR_RETURN(dir_, MakeTempDir("tessera-bench"));
  for (int i = 0; i < n; ++i) {
    ServerProcess sp;
    const std::string port_file = absl::StrCat(dir_, "/s", i, ".port");
    sp.log_file = absl::StrCat(dir_, "/s", i, ".log");
    SubprocessOptions o;
    o.binary = binary;
    o.args = {"--host=127.0.0.1", "--port=0", absl::StrCat("--port_file=", port_file),
              absl::StrCat("--data_dir=", dir_, "/s", i, "-data"), "--log_level=warn"};
    if (i == 0) {
      unix_path_ = absl::StrCat(dir_, "/s0.sock");
      o.args.push_back(absl::StrCat("--unix_socket=", unix_path_));
    }
    for (const auto& a : absl::GetFlag(FLAGS_server_args)) o.args.push_back(a);
    o.log_file = sp.log_file;
    ASSIGN_OR_RETURN(sp.process, Subprocess::Start(o));
    auto port = WaitForPortFile(port_file, absl::Seconds(20), sp.process.get());
    if (!port.ok()) {
      return absl::Status(port.status().code(), absl::StrCat("starting ", binary, ": ", port.status().message(),
                                                             "\nits log ends with:\n", FileTail(sp.log_file)));
    }
    sp.address = absl::StrCat("127.0.0.1:", *port);
    std::fprintf(stderr, "tessera-bench: server %d pid %d on %s%s\n", i, static_cast<int>(sp.process->pid()),
                 sp.address.c_str(), i == 0 ? absl::StrCat(" and unix:", unix_path_).c_str() : "");
    addresses_.push_back(sp.address);
    servers_.push_back(std::move(sp));
  }
  if (!absl::GetFlag(FLAGS_unix_socket)) unix_path_.clear();
  return absl::OkStatus();
}

absl::Status Bench::ConnectClient() {
  KvClientOptions o;
  o.connections_per_server = absl::GetFlag(FLAGS_connections);
  // A dead or wedged server fails the run within seconds instead of the default two minutes.
  o.rpc_timeout = absl::Seconds(20);
  o.total_timeout = absl::Seconds(20);
  if (!unix_path_.empty()) o.address_overrides[0] = "unix:" + unix_path_;
  ASSIGN_OR_RETURN(client_, KvClient::Connect(addresses_, o));
  for (auto& st : client_->ServerStatus()) RETURN_IF_ERROR(Annotate(st.status(), "server status"));
  if (addresses_.size() > 1) RETURN_IF_ERROR(client_->InstallShardMap());
  (void)client_->DropTables("bench.");
  return absl::OkStatus();
}

void Bench::Add(Figure f) {
  std::fprintf(stderr, "tessera-bench:   %s = %s %s\n", f.key.c_str(), Num(f.value).c_str(), f.unit.c_str());
  figures_.push_back(std::move(f));
}

absl::StatusOr<Window> Bench::OpenLoop(int inflight, absl::FunctionRef<KvFuture(int, uint64_t)> issue) {
  std::deque<std::pair<int, KvFuture>> ring;
  uint64_t issued = 0;
  const Clock::time_point begin = Clock::now();
  const Clock::time_point warm_end = begin + std::chrono::microseconds(static_cast<int64_t>(warmup_ * 1e6));
  for (int s = 0; s < inflight; ++s) ring.emplace_back(s, issue(s, issued++));
  bool measuring = false, stopping = false;
  Clock::time_point t0, t1;
  double c0 = 0, s0 = 0, c1 = 0, s1 = 0;
  uint64_t done = 0;
  absl::Status error;
  auto start_window = [&](Clock::time_point now) {
    measuring = true;
    t0 = now;
    c0 = CpuSeconds(0);
    s0 = ServerCpu();
    done = 0;
  };
  if (warmup_ <= 0) start_window(begin);
  while (!ring.empty()) {
    auto [slot, future] = std::move(ring.front());
    ring.pop_front();
    absl::Status s = future.Wait();
    if (!s.ok() && error.ok()) {
      error = s;
      stopping = true;
    }
    const Clock::time_point now = Clock::now();
    if (stopping) continue;
    if (measuring) {
      ++done;
      if (Since(t0, now) >= seconds_) {
        stopping = true;
        t1 = now;
        c1 = CpuSeconds(0);
        s1 = ServerCpu();
        continue;
      }
    } else if (now >= warm_end) {
      start_window(now);
    }
    ring.emplace_back(slot, issue(slot, issued++));
  }
  if (!error.ok()) return error;
  Window w;
  w.seconds = Since(t0, t1);
  w.ops = done;
  if (c0 >= 0 && c1 >= 0) w.client_cores = (c1 - c0) / w.seconds;
  if (s0 >= 0 && s1 >= 0) w.server_cores = (s1 - s0) / w.seconds;
  return w;
}

absl::Status Bench::Throughput(const std::string& key, const std::string& unit, int cmp, double target, int inflight,
                               double units_per_op, absl::FunctionRef<KvFuture(int, uint64_t)> issue) {
  std::vector<double> values, client, server, per_cpu;
  for (int r = 0; r < repeat_; ++r) {
    std::fprintf(stderr, "tessera-bench: %s (%d in flight)%s\n", key.c_str(), inflight,
                 repeat_ > 1 ? absl::StrCat(" run ", r + 1, "/", repeat_).c_str() : "");
    auto w = OpenLoop(inflight, issue);
    if (!w.ok()) return Annotate(w.status(), key);
    values.push_back(units_per_op * static_cast<double>(w->ops) / w->seconds);
    client.push_back(w->client_cores);
    server.push_back(w->server_cores);
    if (w->client_cores >= 0 && w->server_cores >= 0 && w->client_cores + w->server_cores > 0) {
      per_cpu.push_back(values.back() / (w->client_cores + w->server_cores));
    }
    if (repeat_ > 1) std::fprintf(stderr, "tessera-bench:   run %d: %s %s\n", r + 1, Num(values.back()).c_str(), unit.c_str());
  }
  Figure f;
  f.key = key;
  f.value = Median(values);
  f.unit = unit;
  f.cmp = cmp;
  f.target = target;
  f.client_cores = Median(client);
  f.server_cores = Median(server);
  if (per_cpu.size() == values.size()) f.per_cpu_second = Median(per_cpu);
  Add(std::move(f));
  return absl::OkStatus();
}

TableSpec SparseSpec(const std::string& name, uint32_t dim, const std::string& optimizer, float lr) {
  TableSpec spec;
  spec.set_name(name);
  spec.set_kind(TableSpec::SPARSE);
  spec.set_dim(dim);
  spec.mutable_optimizer()->set_type(optimizer);
  spec.mutable_optimizer()->set_learning_rate(lr);
  spec.mutable_initializer()->set_type("uniform");
  spec.mutable_initializer()->set_scale(0.01f);
  spec.mutable_initializer()->set_seed(7);
  return spec;
}

void FillGradients(std::vector<float>* g, uint64_t salt) {
  for (size_t i = 0; i < g->size(); ++i) (*g)[i] = 1e-3f * static_cast<float>(static_cast<int>((i + salt) % 7) - 3);
}

// ---------------------------------------------------------------------------------------------

absl::Status Bench::MeasureMemory() {
  if (!Wanted("bytes_per_row")) return absl::OkStatus();
  const int64_t rows = absl::GetFlag(FLAGS_rows);
  const size_t batch = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_sparse_batch)));
  if (rows <= 0) return absl::OkStatus();
  RETURN_IF_ERROR(client_->CreateTable(SparseSpec(kRowsWarm, kSparseDim, "adagrad", 0.05f)));
  RETURN_IF_ERROR(client_->CreateTable(SparseSpec(kRows, kSparseDim, "adagrad", 0.05f)));
  constexpr int kSlots = 2;
  std::vector<std::vector<uint64_t>> keys(kSlots, std::vector<uint64_t>(batch));
  std::vector<float> grads(batch * kSparseDim);
  FillGradients(&grads, 0);
  auto make_batch = [&](int slot, uint64_t first, size_t n, uint64_t salt) {
    keys[slot].resize(n);
    for (size_t i = 0; i < n; ++i) keys[slot][i] = Mix((first + i) ^ salt);
    std::sort(keys[slot].begin(), keys[slot].end());
  };
  // Warm the server's message buffers and allocator on a throwaway table, so that the baseline
  // below already includes them.
  std::fprintf(stderr, "tessera-bench: bytes_per_row: warming up\n");
  for (int i = 0; i < 4; ++i) {
    make_batch(0, static_cast<uint64_t>(i) * batch, batch, 0xabcdef);
    RETURN_IF_ERROR(client_->Push(kRowsWarm, keys[0], absl::MakeConstSpan(grads.data(), batch * kSparseDim)));
  }
  RETURN_IF_ERROR(client_->DropTables(kRowsWarm));
  absl::SleepFor(absl::Milliseconds(300));
  ASSIGN_OR_RETURN(const uint64_t before, ServerRss());
  std::fprintf(stderr, "tessera-bench: bytes_per_row: inserting %lld rows (server RSS before: %.1f MB)\n",
               static_cast<long long>(rows), static_cast<double>(before) / 1e6);
  const Clock::time_point t0 = Clock::now();
  std::deque<std::pair<int, KvFuture>> ring;
  uint64_t next = 0;
  Clock::time_point last_report = t0;
  absl::Status error;
  auto issue = [&](int slot) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(batch, static_cast<uint64_t>(rows) - next));
    make_batch(slot, next, n, 0);
    next += n;
    ring.emplace_back(slot, client_->PushAsync(kRows, keys[slot], absl::MakeConstSpan(grads.data(), n * kSparseDim)));
  };
  for (int s = 0; s < kSlots && next < static_cast<uint64_t>(rows); ++s) issue(s);
  while (!ring.empty()) {
    auto [slot, f] = std::move(ring.front());
    ring.pop_front();
    absl::Status s = f.Wait();
    if (!s.ok() && error.ok()) error = s;
    if (error.ok() && next < static_cast<uint64_t>(rows)) issue(slot);
    if (Since(last_report, Clock::now()) > 5) {
      last_report = Clock::now();
      std::fprintf(stderr, "tessera-bench: bytes_per_row: %llu rows sent\n", static_cast<unsigned long long>(next));
    }
  }
  RETURN_IF_ERROR(Annotate(error, "inserting rows"));
  const double insert_seconds = Since(t0, Clock::now());
  absl::SleepFor(absl::Milliseconds(300));
  ASSIGN_OR_RETURN(const uint64_t after, ServerRss());
  uint64_t table_rows = 0, table_bytes = 0;
  for (auto& st : client_->ServerStatus()) {
    if (!st.ok()) return st.status();
    for (const auto& t : st->tables()) {
      if (t.name() == kRows) {
        table_rows += t.rows();
        table_bytes += t.bytes();
      }
    }
  }
  if (table_rows != static_cast<uint64_t>(rows)) {
    return absl::InternalError(absl::StrCat("the servers hold ", table_rows, " rows of ", kRows, " after ", rows,
                                            " distinct keys were pushed"));
  }
  const double grown = static_cast<double>(after) - static_cast<double>(before);
  Add({.key = "bytes_per_row", .value = grown / static_cast<double>(rows), .unit = "B/row", .cmp = -1, .target = 93.6});
  Add({.key = "table_bytes_per_row", .value = static_cast<double>(table_bytes) / static_cast<double>(rows),
       .unit = "B/row"});
  Add({.key = "sparse_insert_keys_per_s", .value = static_cast<double>(rows) / insert_seconds, .unit = "keys/s"});
  Add({.key = "server_rss_MB_after_rows", .value = static_cast<double>(after) / 1e6, .unit = "MB"});
  return client_->DropTables(kRows);
}

absl::Status Bench::MeasureDense() {
  if (!AnyWanted({"dense_push_MBps_1MiB", "dense_pull_MBps_1MiB", "dense_push_MBps_64KiB", "dense_pull_MBps_64KiB",
                  "pull_p50_us", "pull_p99_us"})) {
    return absl::OkStatus();
  }
  const uint64_t size = static_cast<uint64_t>(std::max<int64_t>(absl::GetFlag(FLAGS_dense_elements), 1 << 20));
  TableSpec spec;
  spec.set_name(kDense);
  spec.set_kind(TableSpec::DENSE);
  spec.set_size(size);
  spec.mutable_optimizer()->set_type("sgd");
  spec.mutable_optimizer()->set_learning_rate(0.5f);
  RETURN_IF_ERROR(client_->CreateTable(spec));

  // Sanity check of the wire path: a push must move the weights by -lr * gradient.
  {
    std::vector<float> before(16), after(16), grad(16, 1.0f);
    RETURN_IF_ERROR(client_->PullDense(kDense, 1000, absl::MakeSpan(before)));
    RETURN_IF_ERROR(client_->PushDense(kDense, 1000, grad));
    RETURN_IF_ERROR(client_->PullDense(kDense, 1000, absl::MakeSpan(after)));
    for (int i = 0; i < 16; ++i) {
      if (std::abs(after[i] - (before[i] - 0.5f)) > 1e-5f) {
        return absl::InternalError(absl::StrCat("dense sanity check: element ", 1000 + i, " went from ", before[i],
                                                " to ", after[i], " after pushing 1.0 with lr 0.5"));
      }
    }
  }

  const int inflight = Inflight(absl::GetFlag(FLAGS_dense_inflight));
  for (const auto& [label, bytes, target] :
       {std::tuple<std::string, uint64_t, double>{"1MiB", 1 << 20, 3700}, {"64KiB", 64 << 10, 600}}) {
    const uint64_t n = bytes / sizeof(float);
    const uint64_t positions = std::max<uint64_t>(1, size / n);
    std::vector<std::vector<float>> bufs(inflight, std::vector<float>(n));
    for (int s = 0; s < inflight; ++s) FillGradients(&bufs[s], s);
    const std::string push_key = "dense_push_MBps_" + label, pull_key = "dense_pull_MBps_" + label;
    if (Wanted(push_key)) {
      RETURN_IF_ERROR(Throughput(push_key, "MB/s", 1, target, inflight, static_cast<double>(bytes) / 1e6,
                                 [&](int slot, uint64_t i) {
                                   return client_->PushDenseAsync(kDense, (i % positions) * n, bufs[slot]);
                                 }));
    }
    if (Wanted(pull_key)) {
      RETURN_IF_ERROR(Throughput(pull_key, "MB/s", 1, target, inflight, static_cast<double>(bytes) / 1e6,
                                 [&](int slot, uint64_t i) {
                                   return client_->PullDenseAsync(kDense, (i % positions) * n,
                                                                  absl::MakeSpan(bufs[slot]));
                                 }));
    }
  }
  return absl::OkStatus();
}

absl::Status Bench::MeasureLatency() {
  if (!AnyWanted({"pull_p50_us", "pull_p99_us"})) return absl::OkStatus();
  const uint64_t size = static_cast<uint64_t>(std::max<int64_t>(absl::GetFlag(FLAGS_dense_elements), 1 << 20));
  const uint64_t n = (64 << 10) / sizeof(float);
  const uint64_t positions = std::max<uint64_t>(1, size / n);
  std::vector<float> out(n);
  std::vector<double> p50s, p99s, means;
  for (int r = 0; r < repeat_; ++r) {
    std::fprintf(stderr, "tessera-bench: pull latency (64 KiB dense, one at a time)\n");
    std::vector<double> lat;
    const Clock::time_point begin = Clock::now();
    uint64_t i = 0;
    for (;;) {
      const Clock::time_point t0 = Clock::now();
      RETURN_IF_ERROR(Annotate(client_->PullDense(kDense, (i++ % positions) * n, absl::MakeSpan(out)), "pull latency"));
      const Clock::time_point t1 = Clock::now();
      const double elapsed = Since(begin, t1);
      if (elapsed >= warmup_) lat.push_back(Since(t0, t1) * 1e6);
      if (elapsed >= warmup_ + seconds_) break;
    }
    means.push_back(std::accumulate(lat.begin(), lat.end(), 0.0) / static_cast<double>(std::max<size_t>(1, lat.size())));
    p50s.push_back(Percentile(lat, 0.50));
    p99s.push_back(Percentile(lat, 0.99));
  }
  Add({.key = "pull_p50_us", .value = Median(p50s), .unit = "us"});
  Add({.key = "pull_p99_us", .value = Median(p99s), .unit = "us"});
  Add({.key = "pull_mean_us", .value = Median(means), .unit = "us"});
  return absl::OkStatus();
}

absl::Status Bench::MeasureSparse() {
  if (!AnyWanted({"sparse_push_keys_per_s", "sparse_pull_keys_per_s"})) return absl::OkStatus();
  RETURN_IF_ERROR(client_->CreateTable(SparseSpec(kSparse, kSparseDim, "adagrad", 0.05f)));
  const size_t prefill = static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_prefill_rows)));
  const size_t batch = std::min(prefill, static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_sparse_batch))));
  // Prefill with random 64-bit keys; the measured requests then update and read existing rows.
  std::vector<uint64_t> universe(prefill);
  for (size_t i = 0; i < prefill; ++i) universe[i] = Mix(i ^ 0x5eed5eed5eedULL);
  std::fprintf(stderr, "tessera-bench: sparse: prefilling %zu rows\n", prefill);
  {
    std::vector<float> g(batch * kSparseDim);
    FillGradients(&g, 1);
    const Clock::time_point t0 = Clock::now();
    for (size_t first = 0; first < prefill; first += batch) {
      const size_t n = std::min(batch, prefill - first);
      std::vector<uint64_t> k(universe.begin() + first, universe.begin() + first + n);
      std::sort(k.begin(), k.end());
      RETURN_IF_ERROR(client_->Push(kSparse, k, absl::MakeConstSpan(g.data(), n * kSparseDim)));
    }
    std::fprintf(stderr, "tessera-bench: sparse: prefill took %.2f s\n", Since(t0, Clock::now()));
  }
  const int inflight = Inflight(absl::GetFlag(FLAGS_sparse_inflight));
  // Pre-built requests: each `batch` distinct keys drawn from the prefilled ones, sorted.
  const int sets = std::max(8, inflight);
  std::mt19937_64 rng(42);
  std::vector<std::vector<uint64_t>> key_sets(sets);
  std::vector<uint64_t> shuffled = universe;
  for (int s = 0; s < sets; ++s) {
    for (size_t i = 0; i < batch; ++i) {  // partial Fisher-Yates: the first `batch` become a random sample
      std::uniform_int_distribution<size_t> pick(i, shuffled.size() - 1);
      std::swap(shuffled[i], shuffled[pick(rng)]);
    }
    key_sets[s].assign(shuffled.begin(), shuffled.begin() + batch);
    std::sort(key_sets[s].begin(), key_sets[s].end());
  }
  std::vector<std::vector<float>> bufs(inflight, std::vector<float>(batch * kSparseDim));
  for (int s = 0; s < inflight; ++s) FillGradients(&bufs[s], s);
  const double keys_per_op = static_cast<double>(batch);
  if (Wanted("sparse_push_keys_per_s")) {
    RETURN_IF_ERROR(Throughput("sparse_push_keys_per_s", "keys/s", 1, 20e6, inflight, keys_per_op,
                               [&](int slot, uint64_t i) {
                                 return client_->PushAsync(kSparse, key_sets[i % sets], bufs[slot]);
                               }));
  }
  if (Wanted("sparse_pull_keys_per_s")) {
    RETURN_IF_ERROR(Throughput("sparse_pull_keys_per_s", "keys/s", 1, 20e6, inflight, keys_per_op,
                               [&](int slot, uint64_t i) {
                                 return client_->PullAsync(kSparse, key_sets[i % sets], absl::MakeSpan(bufs[slot]));
                               }));
  }
  return absl::OkStatus();
}

absl::Status Bench::MeasureSmall() {
  if (!AnyWanted({"small_rpc_per_s", "small_pull_rpc_per_s"})) return absl::OkStatus();
  RETURN_IF_ERROR(client_->CreateTable(SparseSpec(kSmall, kSmallDim, "sgd", 0.01f)));
  const int inflight = Inflight(absl::GetFlag(FLAGS_small_inflight));
  constexpr uint64_t kKeys = 4096;
  std::vector<uint64_t> keys(kKeys);
  for (uint64_t i = 0; i < kKeys; ++i) keys[i] = Mix(i ^ 0x51a11ULL);
  std::vector<std::vector<float>> bufs(inflight, std::vector<float>(kSmallDim));
  for (int s = 0; s < inflight; ++s) FillGradients(&bufs[s], s);
  if (Wanted("small_rpc_per_s")) {
    RETURN_IF_ERROR(Throughput("small_rpc_per_s", "rpc/s", 1, 15000, inflight, 1, [&](int slot, uint64_t i) {
      return client_->PushAsync(kSmall, absl::MakeConstSpan(&keys[i % kKeys], 1), bufs[slot]);
    }));
  }
  if (Wanted("small_pull_rpc_per_s")) {
    RETURN_IF_ERROR(Throughput("small_pull_rpc_per_s", "rpc/s", 0, 0, inflight, 1, [&](int slot, uint64_t i) {
      return client_->PullAsync(kSmall, absl::MakeConstSpan(&keys[i % kKeys], 1), absl::MakeSpan(bufs[slot]));
    }));
  }
  return absl::OkStatus();
}

void Bench::Print() const {
  FILE* table_out = absl::GetFlag(FLAGS_json) ? stderr : stdout;
  std::fprintf(table_out, "\n%-26s %14s %-7s %12s %-4s %7s %7s %12s\n", "figure", "value", "unit", "target", "met",
               "client", "server", "per_cpu_s");
  for (const auto& f : figures_) {
    std::fprintf(table_out, "%-26s %14s %-7s %12s %-4s %7s %7s %12s\n", f.key.c_str(), Num(f.value).c_str(),
                 f.unit.c_str(), f.TargetText().c_str(), f.cmp == 0 ? "" : (f.Met() ? "yes" : "NO"),
                 f.client_cores < 0 ? "" : absl::StrFormat("%.2f", f.client_cores).c_str(),
                 f.server_cores < 0 ? "" : absl::StrFormat("%.2f", f.server_cores).c_str(),
                 f.PerCpuSecond() < 0 ? "" : Num(f.PerCpuSecond()).c_str());
  }
  std::fprintf(table_out,
               "(client / server: CPU cores used during the measurement; per_cpu_s: value per CPU-second of client\n"
               " and servers together; %ld CPUs online, load average %s)\n",
               sysconf(_SC_NPROCESSORS_ONLN), Num(LoadAverage()).c_str());
  if (!absl::GetFlag(FLAGS_json)) return;
  std::vector<std::string> members;
  std::vector<std::string> missed;
  for (const auto& f : figures_) {
    members.push_back(absl::StrCat(JsonString(f.key), ": ", Num(f.value)));
    if (!f.Met()) missed.push_back(JsonString(f.key));
  }
  for (const auto& f : figures_) {
    if (f.client_cores >= 0) members.push_back(absl::StrCat(JsonString(f.key + "_client_cores"), ": ", Num(f.client_cores)));
    if (f.server_cores >= 0) members.push_back(absl::StrCat(JsonString(f.key + "_server_cores"), ": ", Num(f.server_cores)));
    if (f.PerCpuSecond() >= 0) members.push_back(absl::StrCat(JsonString(f.key + "_per_cpu_s"), ": ", Num(f.PerCpuSecond())));
  }
  members.push_back(absl::StrCat("\"load_average_end\": ", Num(LoadAverage())));
  for (const auto& [k, v] : info_) members.push_back(absl::StrCat(JsonString(k), ": ", v));
  members.push_back(absl::StrCat("\"targets_missed\": [", absl::StrJoin(missed, ", "), "]"));
  std::printf("{%s}\n", absl::StrJoin(members, ", ").c_str());
  std::fflush(stdout);
}

absl::Status Bench::Run() {
  seconds_ = std::max(0.05, absl::GetFlag(FLAGS_seconds));
  warmup_ = std::max(0.0, absl::GetFlag(FLAGS_warmup_seconds));
  repeat_ = std::max(1, absl::GetFlag(FLAGS_repeat));
  for (absl::string_view o : absl::StrSplit(absl::GetFlag(FLAGS_only), ',', absl::SkipWhitespace())) {
    only_.emplace_back(o);
  }
  RETURN_IF_ERROR(StartServers());
  RETURN_IF_ERROR(ConnectClient());
  info_ = {
      {"cpu_count", Num(static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN)))},
      {"num_servers", Num(static_cast<double>(addresses_.size()))},
      {"servers_started_here", servers_.empty() ? "false" : "true"},
      {"transport", JsonString(unix_path_.empty() ? "tcp" : "unix")},
      {"connections", Num(absl::GetFlag(FLAGS_connections))},
      {"dense_inflight", Num(Inflight(absl::GetFlag(FLAGS_dense_inflight)))},
      {"sparse_inflight", Num(Inflight(absl::GetFlag(FLAGS_sparse_inflight)))},
      {"small_inflight", Num(Inflight(absl::GetFlag(FLAGS_small_inflight)))},
      {"seconds", Num(seconds_)},
      {"repeat", Num(repeat_)},
      {"rows", Num(static_cast<double>(absl::GetFlag(FLAGS_rows)))},
      {"prefill_rows", Num(static_cast<double>(absl::GetFlag(FLAGS_prefill_rows)))},
      {"load_average_start", Num(LoadAverage())},
  };
  // Memory first, while the servers hold nothing else.
  RETURN_IF_ERROR(MeasureMemory());
  RETURN_IF_ERROR(MeasureDense());
  RETURN_IF_ERROR(MeasureLatency());
  RETURN_IF_ERROR(MeasureSparse());
  RETURN_IF_ERROR(MeasureSmall());
  (void)client_->DropTables("bench.");
  Print();
  return absl::OkStatus();
}

}  // namespace
}  // namespace tessera::bench

int main(int argc, char** argv) {
  tessera::ParseFlags(argc, argv,
                      "throughput, latency and memory figures of Tessera's parameter store.\n"
                      "Starts tessera-server(s) on loopback (or uses --servers) and drives them through KvClient.\n\n"
                      "Usage: tessera-bench [--json] [--only=dense,sparse,...] [--seconds=3] [--num_servers=1] [flags...]");
  signal(SIGPIPE, SIG_IGN);
  absl::Status status;
  {
    tessera::bench::Bench bench;
    status = bench.Run();
  }
  if (!status.ok()) {
    std::fprintf(stderr, "tessera-bench: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
