// Factorization machine (Rendle 2010) for binary labels with logloss, using the O(k * nnz) form of
// the pairwise term: 1/2 sum_f [(sum_i v_i,f x_i)^2 - sum_i v_i,f^2 x_i^2].
#include <algorithm>
#include <memory>

#include "worker/model/model_internal.h"

namespace tessera::worker::internal {
namespace {

class FmModel final : public SparseModel {
 public:
  explicit FmModel(const ModelConfig& config)
      : SparseModel(config, /*dim=*/1 + config.factor_dim, "normal", 0.01f), k_(config.factor_dim), dim_(1 + k_) {}

  double Gradient(const data::Batch& batch, absl::Span<const uint64_t> keys, absl::Span<const float> params,
                  absl::Span<float> grads) const override {
    StartGradient(*this, batch, keys, params, grads);
    const size_t n = batch.size();
    if (n == 0) return 0.0;
    thread_local BatchRows rows;
    thread_local std::vector<double> sums;
    rows.Build(batch, keys);
    sums.resize(k_);
    const double inv_n = 1.0 / static_cast<double>(n);
    double loss = 0;
    for (size_t i = 0; i < n; ++i) {
      const double z = Score(rows, i, params, sums.data());
      const double y = batch.data->labels[batch.begin + i];
      loss += LogLossFromLogit(z, y);
      const double g = (Sigmoid(z) - y) * inv_n;
      if (rows.bias_row >= 0) grads[rows.bias_row * dim_] += static_cast<float>(g);
      for (size_t j = rows.begin[i]; j < rows.begin[i + 1]; ++j) {
        const double x = rows.value[j];
        const float* w = params.data() + static_cast<size_t>(rows.row[j]) * dim_;
        float* gw = grads.data() + static_cast<size_t>(rows.row[j]) * dim_;
        gw[0] += static_cast<float>(g * x);
        for (uint32_t f = 0; f < k_; ++f) {
          gw[1 + f] += static_cast<float>(g * x * (sums[f] - w[1 + f] * x));
        }
      }
    }
    return loss * inv_n + AddSparseL2(config().l2, dim_, rows.bias_row, params, grads);
  }

  void Predict(const data::Batch& batch, absl::Span<const uint64_t> keys, absl::Span<const float> params,
               std::vector<float>* out) const override {
    StartPredict(*this, batch, keys, params);
    thread_local BatchRows rows;
    thread_local std::vector<double> sums;
    rows.Build(batch, keys);
    sums.resize(k_);
    out->resize(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      (*out)[i] = static_cast<float>(Sigmoid(Score(rows, i, params, sums.data())));
    }
  }

  int num_outputs() const override { return 1; }

 private:
  // The logit of example i; leaves sum_i v_i,f x_i in sums[f].
  double Score(const BatchRows& rows, size_t i, absl::Span<const float> params, double* sums) const {
    double z = rows.bias_row >= 0 ? params[rows.bias_row * dim_] : 0.0;
    double squares = 0;
    std::fill(sums, sums + k_, 0.0);
    for (size_t j = rows.begin[i]; j < rows.begin[i + 1]; ++j) {
      const double x = rows.value[j];
      const float* w = params.data() + static_cast<size_t>(rows.row[j]) * dim_;
      z += w[0] * x;
      for (uint32_t f = 0; f < k_; ++f) {
        const double vx = w[1 + f] * x;
        sums[f] += vx;
        squares += vx * vx;
      }
    }
    double pairs = 0;
    for (uint32_t f = 0; f < k_; ++f) pairs += sums[f] * sums[f];
    return z + 0.5 * (pairs - squares);
  }

  const uint32_t k_;
  const uint32_t dim_;
};

}  // namespace

std::unique_ptr<Model> NewFm(const ModelConfig& config) { return std::make_unique<FmModel>(config); }

}  // namespace tessera::worker::internal
