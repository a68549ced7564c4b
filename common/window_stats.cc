#include "common/window_stats.h"

#include <cmath>

namespace tessera {
namespace {
int BucketOf(double us) {
  if (!(us >= 1.0)) return 0;
  const int b = static_cast<int>(std::log2(us) * 8.0) + 1;
  return b >= WindowStats::kBuckets ? WindowStats::kBuckets - 1 : b;
}
// Geometric middle of a bucket, in microseconds.
double BucketValue(int b) { return b == 0 ? 0.5 : std::exp2((b - 0.5) / 8.0); }
}  // namespace

void WindowStats::RecordAt(double latency_us, absl::Time now) {
  const int64_t sec = absl::ToUnixSeconds(now);
  absl::MutexLock lock(&mu_);
  Slot& s = slots_[sec % kSeconds];
  if (s.second != sec) {
    s.second = sec;
    s.total = 0;
    s.counts.fill(0);
  }
  ++s.total;
  ++s.counts[BucketOf(latency_us)];
}

double WindowStats::Rate(absl::Time now) const {
  const int64_t sec = absl::ToUnixSeconds(now);
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const Slot& s : slots_) {
    if (s.second > sec - kSeconds && s.second <= sec) total += s.total;
  }
  return static_cast<double>(total) / kSeconds;
}

void WindowStats::AddTo(std::array<uint64_t, kBuckets>* counts, absl::Time now) const {
  const int64_t sec = absl::ToUnixSeconds(now);
  absl::MutexLock lock(&mu_);
  for (const Slot& s : slots_) {
    if (s.second > sec - kSeconds && s.second <= sec) {
      for (int b = 0; b < kBuckets; ++b) (*counts)[b] += s.counts[b];
    }
  }
}

double WindowStats::QuantileOf(const std::array<uint64_t, kBuckets>& counts, double q) {
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0.0;
  const double rank = q * static_cast<double>(total);
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += counts[b];
    if (static_cast<double>(seen) >= rank && counts[b] > 0) return BucketValue(b);
  }
  return BucketValue(kBuckets - 1);
}

double WindowStats::Quantile(double q, absl::Time now) const {
  std::array<uint64_t, kBuckets> counts{};
  AddTo(&counts, now);
  return QuantileOf(counts, q);
}

}  // namespace tessera
