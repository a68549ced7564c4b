// Prometheus metrics for Tessera daemons (prometheus-cpp).
//
// A Metrics object owns a registry with the RPC families every daemon exports —
// tessera_rpc_requests_total{service,method,code} and tessera_rpc_latency_seconds{service,method} —
// filled by a gRPC server interceptor, plus gauges that components compute at scrape time through
// AddCollector(). StartMetricsServer() serves them over HTTP at /metrics.
//
// Thread-safety: all methods are thread-safe.
#ifndef TESSERA_COMMON_METRICS_H_
#define TESSERA_COMMON_METRICS_H_

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
}

namespace tessera {

class Metrics {
 public:
  // `daemon` labels every series ("server", "coordinator").
  explicit Metrics(std::string daemon);
  ~Metrics();

  prometheus::Registry& registry() { return *registry_; }

  // Records one finished RPC.
  void RecordRpc(const std::string& method, int code, double seconds);

  // Gauge families computed at scrape time: `collect` returns families built with the helpers below.
  void AddCollector(std::function<std::vector<prometheus::MetricFamily>()> collect);

  // The interceptor factory to install on a gRPC server so every RPC is counted and timed.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  // Counts a request refused for a missing or wrong auth token.
  void CountUnauthenticated(const std::string& method);

 private:
  class Collector;
  const std::string daemon_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Collector> collector_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Family<prometheus::Counter>* unauthenticated_;
  friend absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsServer(const std::string&, int, Metrics*,
                                                                                int*);
};

// Serves `metrics` at http://host:port/metrics; port 0 picks a free one (written to *bound_port).
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsServer(const std::string& host, int port,
                                                                       Metrics* metrics, int* bound_port);

// A daemon's --metrics_port handling: nothing when `port` < 0; otherwise starts the endpoint,
// logs its URL and writes the bound port to `port_file` (when not empty).
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetricsServerFromFlags(const std::string& host, int port,
                                                                                const std::string& port_file,
                                                                                Metrics* metrics);

// Builders for scrape-time families.
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help);
void AddGauge(prometheus::MetricFamily* family, std::map<std::string, std::string> labels, double value);
prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help);
void AddCounter(prometheus::MetricFamily* family, std::map<std::string, std::string> labels, double value);

}  // namespace tessera

#endif  // TESSERA_COMMON_METRICS_H_
