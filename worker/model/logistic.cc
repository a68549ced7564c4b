// Sparse binary logistic regression: p = s(b + sum_f w_f x_f), logloss.
#include <algorithm>
#include <memory>

#include "worker/model/model_internal.h"

namespace tessera::worker::internal {
namespace {

class LogisticModel final : public SparseModel {
 public:
  explicit LogisticModel(const ModelConfig& config) : SparseModel(config, /*dim=*/1, "zeros") {}

  double Gradient(const data::Batch& batch, absl::Span<const uint64_t> keys, absl::Span<const float> params,
                  absl::Span<float> grads) const override {
    StartGradient(*this, batch, keys, params, grads);
    const size_t n = batch.size();
    if (n == 0) return 0.0;
    thread_local BatchRows rows;
    rows.Build(batch, keys);
    const double inv_n = 1.0 / static_cast<double>(n);
    double loss = 0;
    for (size_t i = 0; i < n; ++i) {
      const double z = Logit(rows, i, params);
      const double y = batch.data->labels[batch.begin + i];
      loss += LogLossFromLogit(z, y);
      const float g = static_cast<float>((Sigmoid(z) - y) * inv_n);
      if (rows.bias_row >= 0) grads[rows.bias_row] += g;
      for (size_t j = rows.begin[i]; j < rows.begin[i + 1]; ++j) grads[rows.row[j]] += g * rows.value[j];
    }
    return loss * inv_n + AddSparseL2(config().l2, 1, rows.bias_row, params, grads);
  }

  void Predict(const data::Batch& batch, absl::Span<const uint64_t> keys, absl::Span<const float> params,
               std::vector<float>* out) const override {
    StartPredict(*this, batch, keys, params);
    thread_local BatchRows rows;
    rows.Build(batch, keys);
    out->resize(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) (*out)[i] = static_cast<float>(Sigmoid(Logit(rows, i, params)));
  }

  int num_outputs() const override { return 1; }

 private:
  static double Logit(const BatchRows& rows, size_t i, absl::Span<const float> params) {
    double z = rows.bias_row >= 0 ? params[rows.bias_row] : 0.0;
    for (size_t j = rows.begin[i]; j < rows.begin[i + 1]; ++j) {
      z += static_cast<double>(params[rows.row[j]]) * rows.value[j];
    }
    return z;
  }
};

}  // namespace

std::unique_ptr<Model> NewLogistic(const ModelConfig& config) { return std::make_unique<LogisticModel>(config); }

}  // namespace tessera::worker::internal
