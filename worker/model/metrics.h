// Evaluation metrics over model predictions: accuracy, mean logloss and, for binary tasks, AUC.
// An EvalAccumulator sums what each example contributes, so accumulators built by different
// workers (or threads) over disjoint examples merge into the metrics of the union. Its raw parts
// (counts, logloss sum, score histograms) can be sent over the wire and rebuilt with FromParts().
//
// AUC comes from per-class histograms of P(y = 1) in kAucBins equal bins over [0, 1]: a positive
// beats every negative in lower bins and ties (counts half) with those in its own bin. With 10000
// bins this is within ~1e-4 of the exact AUC unless scores pile up inside single bins.
//
// Thread-safety: EvalAccumulator is a plain value with no internal locking; use one per thread and
// Merge() them, or guard a shared one. ExactAuc() is pure.
#ifndef TESSERA_WORKER_MODEL_METRICS_H_
#define TESSERA_WORKER_MODEL_METRICS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera::worker {

class EvalAccumulator {
 public:
  static constexpr int kAucBins = 10000;
  // Probabilities are clamped to [kProbabilityFloor, 1 - kProbabilityFloor] for logloss.
  static constexpr double kProbabilityFloor = 1e-15;

  EvalAccumulator() = default;

  // Rebuilds an accumulator from the values its accessors returned. `positives` and `negatives`
  // are both empty (no binary examples) or both kAucBins long. INVALID_ARGUMENT when the parts are
  // inconsistent (correct > count, histogram totals > count, negative or non-finite logloss_sum).
  static absl::StatusOr<EvalAccumulator> FromParts(uint64_t count, uint64_t correct, double logloss_sum,
                                                   std::vector<uint64_t> positives,
                                                   std::vector<uint64_t> negatives);

  // Adds labels.size() examples. `predictions` holds num_outputs values per example, as
  // Model::Predict() writes them: num_outputs == 1 is P(y = 1) with labels 0/1 (correct when
  // (p >= 0.5) == (y >= 0.5)); num_outputs >= 2 is class probabilities with labels 0..K-1
  // (correct when the first largest probability is the label's). Binary examples (num_outputs 1,
  // or 2 with score p[1]) also go into the AUC histograms. predictions.size() must be
  // labels.size() * num_outputs (aborts otherwise: a caller bug).
  void Add(absl::Span<const float> predictions, absl::Span<const float> labels, int num_outputs);

  // Adds everything `other` accumulated.
  void Merge(const EvalAccumulator& other);

  uint64_t count() const { return count_; }
  uint64_t correct() const { return correct_; }
  double logloss_sum() const { return logloss_sum_; }
  // Score histograms of positive / negative binary examples; empty until a binary Add().
  const std::vector<uint64_t>& positives() const { return positives_; }
  const std::vector<uint64_t>& negatives() const { return negatives_; }

  // NaN when count() == 0.
  double accuracy() const;
  // Mean natural-log logloss; NaN when count() == 0.
  double logloss() const;
  // NaN unless binary examples of both classes were added.
  double auc() const;

 private:
  uint64_t count_ = 0;
  uint64_t correct_ = 0;
  double logloss_sum_ = 0;
  std::vector<uint64_t> positives_;
  std::vector<uint64_t> negatives_;
};

// Exact AUC (Mann-Whitney, ties count half) of `scores` against 0/1 `labels` (positive when
// >= 0.5). NaN scores rank lowest. NaN when either class is absent. O(n log n). Same sizes required (aborts otherwise).
double ExactAuc(absl::Span<const float> scores, absl::Span<const float> labels);

}  // namespace tessera::worker

#endif  // TESSERA_WORKER_MODEL_METRICS_H_
