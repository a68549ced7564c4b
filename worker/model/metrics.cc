#include "worker/model/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/model/model_internal.h"

namespace tessera::worker {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ClampProbability(double p) {
  constexpr double kLow = EvalAccumulator::kProbabilityFloor;
  constexpr double kHigh = 1.0 - EvalAccumulator::kProbabilityFloor;
  if (!(p > kLow)) return kLow;  // also maps NaN to the floor
  return p < kHigh ? p : kHigh;
}

int Bin(float score) {
  if (!(score > 0.0f)) return 0;
  const int bin = static_cast<int>(static_cast<double>(score) * EvalAccumulator::kAucBins);
  return std::min(bin, EvalAccumulator::kAucBins - 1);
}

uint64_t Total(const std::vector<uint64_t>& v) {
  uint64_t sum = 0;
  for (uint64_t x : v) sum += x;
  return sum;
}

}  // namespace

absl::StatusOr<EvalAccumulator> EvalAccumulator::FromParts(uint64_t count, uint64_t correct, double logloss_sum,
                                                           std::vector<uint64_t> positives,
                                                           std::vector<uint64_t> negatives) {
  if (correct > count) {
    return absl::InvalidArgumentError(absl::StrCat("eval: correct = ", correct, " exceeds count = ", count));
  }
  if (!std::isfinite(logloss_sum) || logloss_sum < 0) {
    return absl::InvalidArgumentError(absl::StrCat("eval: logloss_sum = ", logloss_sum, " must be finite and >= 0"));
  }
  if (positives.size() != negatives.size() || (!positives.empty() && positives.size() != kAucBins)) {
    return absl::InvalidArgumentError(absl::StrCat("eval: histograms hold ", positives.size(), " and ",
                                                   negatives.size(), " bins (expected 0 or ", kAucBins, " each)"));
  }
  const uint64_t p = Total(positives);
  const uint64_t n = Total(negatives);
  if (p > count || n > count - p) {
    return absl::InvalidArgumentError(
        absl::StrCat("eval: histograms hold ", p, " + ", n, " examples, more than count = ", count));
  }
  EvalAccumulator acc;
  acc.count_ = count;
  acc.correct_ = correct;
  acc.logloss_sum_ = logloss_sum;
  acc.positives_ = std::move(positives);
  acc.negatives_ = std::move(negatives);
  return acc;
}

void EvalAccumulator::Add(absl::Span<const float> predictions, absl::Span<const float> labels, int num_outputs) {
  internal::CheckOrDie(num_outputs >= 1 && predictions.size() == labels.size() * static_cast<size_t>(num_outputs),
                       "EvalAccumulator::Add: predictions.size() must be labels.size() * num_outputs");
  const bool binary = num_outputs <= 2;
  if (binary && positives_.empty()) {
    positives_.assign(kAucBins, 0);
    negatives_.assign(kAucBins, 0);
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    const float* p = predictions.data() + i * num_outputs;
    if (num_outputs == 1) {
      const bool positive = labels[i] >= 0.5f;
      correct_ += (p[0] >= 0.5f) == positive;
      logloss_sum_ -= std::log(ClampProbability(positive ? p[0] : 1.0 - p[0]));
      (positive ? positives_ : negatives_)[Bin(p[0])]++;
    } else {
      const int y = internal::ClassOf(labels[i], num_outputs);
      correct_ += std::max_element(p, p + num_outputs) - p == y;
      logloss_sum_ -= std::log(ClampProbability(p[y]));
      if (binary) (y == 1 ? positives_ : negatives_)[Bin(p[1])]++;
    }
  }
  count_ += labels.size();
}

void EvalAccumulator::Merge(const EvalAccumulator& other) {
  count_ += other.count_;
  correct_ += other.correct_;
  logloss_sum_ += other.logloss_sum_;
  if (other.positives_.empty()) return;
  if (positives_.empty()) {
    positives_ = other.positives_;
    negatives_ = other.negatives_;
    return;
  }
  for (int b = 0; b < kAucBins; ++b) {
    positives_[b] += other.positives_[b];
    negatives_[b] += other.negatives_[b];
  }
}

double EvalAccumulator::accuracy() const {
  return count_ == 0 ? kNaN : static_cast<double>(correct_) / static_cast<double>(count_);
}

double EvalAccumulator::logloss() const { return count_ == 0 ? kNaN : logloss_sum_ / static_cast<double>(count_); }

double EvalAccumulator::auc() const {
  if (positives_.empty()) return kNaN;
  double negatives_below = 0;
  double wins = 0;
  for (int b = 0; b < kAucBins; ++b) {
    const double neg = static_cast<double>(negatives_[b]);
    wins += static_cast<double>(positives_[b]) * (negatives_below + 0.5 * neg);
    negatives_below += neg;
  }
  const double pos = static_cast<double>(Total(positives_));
  if (pos == 0 || negatives_below == 0) return kNaN;
  return wins / (pos * negatives_below);
}

double ExactAuc(absl::Span<const float> scores, absl::Span<const float> labels) {
  internal::CheckOrDie(scores.size() == labels.size(), "ExactAuc: scores and labels differ in size");
  std::vector<std::pair<float, bool>> v(scores.size());
  for (size_t i = 0; i < scores.size(); ++i) {
    // NaN ranks lowest, as in the histogram (and keeps the sort's ordering strict).
    const float s = std::isnan(scores[i]) ? -std::numeric_limits<float>::infinity() : scores[i];
    v[i] = {s, labels[i] >= 0.5f};
  }
  std::sort(v.begin(), v.end());
  double negatives_below = 0;
  double positives = 0;
  double wins = 0;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    double pos = 0;
    double neg = 0;
    for (; j < v.size() && v[j].first == v[i].first; ++j) (v[j].second ? pos : neg) += 1;
    wins += pos * (negatives_below + 0.5 * neg);
    negatives_below += neg;
    positives += pos;
    i = j;
  }
  if (positives == 0 || negatives_below == 0) return kNaN;
  return wins / (positives * negatives_below);
}

}  // namespace tessera::worker
