// WindowStats: event rate and latency percentiles over the last few seconds, for status RPCs.
// Latencies go to log-linear buckets (8 per power of two, about 9% wide), one histogram per
// second in a ring. Thread-safe; Record() takes a short lock.
#ifndef TESSERA_COMMON_WINDOW_STATS_H_
#define TESSERA_COMMON_WINDOW_STATS_H_

#include <array>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace tessera {

class WindowStats {
 public:
  static constexpr int kSeconds = 10;
  static constexpr int kBuckets = 8 * 32;  // up to 2^32 us

  void Record(double latency_us) { RecordAt(latency_us, absl::Now()); }
  void RecordAt(double latency_us, absl::Time now);

  // Events per second over the window ending at `now`.
  double Rate(absl::Time now = absl::Now()) const;
  // Latency quantile q in [0, 1] over the window, microseconds (0 when empty).
  double Quantile(double q, absl::Time now = absl::Now()) const;
  // Adds this window's histogram to `counts` (for quantiles across several WindowStats).
  void AddTo(std::array<uint64_t, kBuckets>* counts, absl::Time now = absl::Now()) const;
  static double QuantileOf(const std::array<uint64_t, kBuckets>& counts, double q);

 private:
  struct Slot {
    int64_t second = -1;
    uint64_t total = 0;
    std::array<uint64_t, kBuckets> counts{};
  };
  mutable absl::Mutex mu_;
  std::array<Slot, kSeconds> slots_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera

#endif  // TESSERA_COMMON_WINDOW_STATS_H_
