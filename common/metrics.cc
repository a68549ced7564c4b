#include "common/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/rpc.h"

namespace tessera {

class Metrics::Collector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<std::function<std::vector<prometheus::MetricFamily>()>> fns;
    {
      absl::MutexLock lock(&mu_);
      fns = fns_;
    }
    std::vector<prometheus::MetricFamily> out;
    for (auto& f : fns) {
      auto fams = f();
      out.insert(out.end(), std::make_move_iterator(fams.begin()), std::make_move_iterator(fams.end()));
    }
    return out;
  }
  void Add(std::function<std::vector<prometheus::MetricFamily>()> f) {
    absl::MutexLock lock(&mu_);
    fns_.push_back(std::move(f));
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::function<std::vector<prometheus::MetricFamily>()>> fns_ ABSL_GUARDED_BY(mu_);
};

namespace {
// "/tessera.v1.ParameterService/Push" -> {"tessera.v1.ParameterService", "Push"}.
std::pair<std::string, std::string> SplitMethod(const std::string& full) {
  std::vector<std::string> parts = absl::StrSplit(full, '/', absl::SkipEmpty());
  if (parts.size() != 2) return {"", full};
  return {parts[0], parts[1]};
}

const char* CodeName(int code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                 "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

class RpcInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(Metrics* metrics, std::string method) : metrics_(metrics), method_(std::move(method)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      start_ = absl::Now();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->RecordRpc(method_, methods->GetSendStatus().error_code(), absl::ToDoubleSeconds(absl::Now() - start_));
    }
    methods->Proceed();
  }

 private:
  Metrics* metrics_;
  std::string method_;
  absl::Time start_ = absl::Now();
};

class RpcInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new RpcInterceptor(metrics_, info->method());
  }

 private:
  Metrics* metrics_;
};
}  // namespace

Metrics::Metrics(std::string daemon)
    : daemon_(std::move(daemon)),
      registry_(std::make_shared<prometheus::Registry>()),
      collector_(std::make_shared<Collector>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("tessera_rpc_requests_total")
                   .Help("gRPC requests handled, by service, method and status code")
                   .Labels({{"daemon", daemon_}})
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("tessera_rpc_latency_seconds")
                  .Help("gRPC request handling latency in seconds, by service and method")
                  .Labels({{"daemon", daemon_}})
                  .Register(*registry_);
  unauthenticated_ = &prometheus::BuildCounter()
                          .Name("tessera_rpc_unauthenticated_total")
                          .Help("Requests refused for a missing or wrong auth token")
                          .Labels({{"daemon", daemon_}})
                          .Register(*registry_);
}

Metrics::~Metrics() = default;

void Metrics::RecordRpc(const std::string& method, int code, double seconds) {
  auto [service, name] = SplitMethod(method);
  requests_->Add({{"service", service}, {"method", name}, {"code", CodeName(code)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  latency_->Add({{"service", service}, {"method", name}}, kBuckets).Observe(seconds);
}

void Metrics::CountUnauthenticated(const std::string& method) {
  auto [service, name] = SplitMethod(method);
  unauthenticated_->Add({{"service", service}, {"method", name}}).Increment();
}

void Metrics::AddCollector(std::function<std::vector<prometheus::MetricFamily>()> collect) {
  collector_->Add(std::move(collect));
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> Metrics::InterceptorFactory() {
  return std::make_unique<RpcInterceptorFactory>(this);
}

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsServer(const std::string& host, int port,
                                                                       Metrics* metrics, int* bound_port) {
  std::unique_ptr<prometheus::Exposer> exposer;
  try {  // prometheus-cpp (civetweb) reports a busy port by throwing; keep that inside this function
    exposer = std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", host, ":", port, ": ", e.what()));
  }
  exposer->RegisterCollectable(metrics->registry_);
  exposer->RegisterCollectable(metrics->collector_);
  const auto ports = exposer->GetListeningPorts();
  if (bound_port != nullptr) *bound_port = ports.empty() ? 0 : ports[0];
  return exposer;
}

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsServerFromFlags(const std::string& host, int port,
                                                                                const std::string& port_file,
                                                                                Metrics* metrics) {
  if (port < 0) return std::unique_ptr<prometheus::Exposer>();
  int bound = 0;
  auto exposer = StartMetricsServer(host, port, metrics, &bound);
  if (!exposer.ok()) return exposer.status();
  spdlog::info("metrics on http://{}/metrics", JoinHostPort(host, bound));
  if (!port_file.empty()) {
    if (auto s = WritePortFile(port_file, bound); !s.ok()) return s;
  }
  return exposer;
}

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  return f;
}

void AddGauge(prometheus::MetricFamily* family, std::map<std::string, std::string> labels, double value) {
  prometheus::ClientMetric m;
  for (auto& [k, v] : labels) m.label.push_back({k, v});
  m.gauge.value = value;
  family->metric.push_back(std::move(m));
}

prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Counter;
  return f;
}

void AddCounter(prometheus::MetricFamily* family, std::map<std::string, std::string> labels, double value) {
  prometheus::ClientMetric m;
  for (auto& [k, v] : labels) m.label.push_back({k, v});
  m.counter.value = value;
  family->metric.push_back(std::move(m));
}

}  // namespace tessera
