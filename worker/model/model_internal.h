// Private to worker/model: the concrete models' factories and the helpers they share (stable
// logistic math, the mapping of a batch's features onto pulled rows). Not part of the API.
// Everything here is either pure or works on caller-owned objects; no shared state.
#ifndef TESSERA_WORKER_MODEL_MODEL_INTERNAL_H_
#define TESSERA_WORKER_MODEL_MODEL_INTERNAL_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "common/data/dataset.h"
#include "worker/model/model.h"

namespace tessera::worker::internal {

// Config already checked by Model::Create().
std::unique_ptr<Model> NewLogistic(const ModelConfig& config);
std::unique_ptr<Model> NewSoftmax(const ModelConfig& config);
std::unique_ptr<Model> NewFm(const ModelConfig& config);
std::unique_ptr<Model> NewMlp(const ModelConfig& config);

// Aborts with `what` when `condition` is false. Only for broken invariants (caller bugs).
void CheckOrDie(bool condition, const char* what);

// Aborts unless `batch` is a valid range of a dataset.
void CheckBatch(const data::Batch& batch);

// The checks every Gradient() / Predict() starts with: a valid batch and spans of
// model.NumParams(keys.size()) floats (anything else is a caller bug and aborts). StartGradient
// also zeroes `grads`.
void StartGradient(const Model& model, const data::Batch& batch, absl::Span<const uint64_t> keys,
                   absl::Span<const float> params, absl::Span<float> grads);
void StartPredict(const Model& model, const data::Batch& batch, absl::Span<const uint64_t> keys,
                  absl::Span<const float> params);

// Base of the models over one SPARSE table of `dim`-float rows (logistic, softmax, fm): a batch's
// keys are its features plus kBiasKey (SparseKeys()).
class SparseModel : public Model {
 public:
  tessera::v1::TableSpec Table() const override;
  void Keys(const data::Batch& batch, std::vector<uint64_t>* keys) const override;

 protected:
  // Rows start from initializer `init_type` with `init_scale`, seeded by config.seed.
  SparseModel(const ModelConfig& config, uint32_t dim, std::string init_type, float init_scale = 0)
      : Model(config, /*sparse=*/true, dim), dim_(dim), init_type_(std::move(init_type)), init_scale_(init_scale) {}

 private:
  const uint32_t dim_;
  const std::string init_type_;
  const float init_scale_;
};

// log(1 + e^z) without overflow or loss of precision for any finite z.
inline double Softplus(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }

inline double Sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

// Binary logloss of logit z for label y in [0, 1]: -y log s(z) - (1 - y) log(1 - s(z)).
inline double LogLossFromLogit(double z, double y) { return Softplus(z) - y * z; }

// Class index of a multiclass label, clamped into [0, k) so a bad label cannot index out of range
// (Validate() rejects such labels up front).
inline int ClassOf(float label, int k) {
  if (!(label >= 0.0f)) return 0;
  if (label >= static_cast<float>(k - 1)) return k - 1;
  return static_cast<int>(label);
}

// Sorted unique keys of a batch: all listed ids for sparse input, columns with a non-zero value
// for dense input, then kBiasKey.
void SparseKeys(const data::Batch& batch, std::vector<uint64_t>* keys);

// A batch's non-zero inputs mapped onto the rows of `keys`: example i has the pairs
// (row[j], value[j]) for j in [begin[i], begin[i + 1]). Features absent from `keys` are dropped.
// bias_row is the row of kBiasKey, or -1 when `keys` lacks it. Reuse one object per thread.
struct BatchRows {
  std::vector<size_t> begin;
  std::vector<uint32_t> row;
  std::vector<float> value;
  int64_t bias_row = -1;

  void Build(const data::Batch& batch, absl::Span<const uint64_t> keys);
};

// Adds (l2 / 2) * ||w||^2 over every row but the bias row to the returned loss term and l2 * w to
// `grads`. Returns the loss term.
double AddSparseL2(float l2, uint32_t dim, int64_t bias_row, absl::Span<const float> params,
                   absl::Span<float> grads);

}  // namespace tessera::worker::internal

#endif  // TESSERA_WORKER_MODEL_MODEL_INTERNAL_H_
