// Multiclass (softmax) logistic regression over a sparse table of K-float rows, with a stable
// log-softmax: loss = logsumexp(z) - z_y.
#include <algorithm>
#include <cmath>
#include <memory>

#include "worker/model/model_internal.h"

namespace tessera::worker::internal {
namespace {

class SoftmaxModel final : public SparseModel {
 public:
  explicit SoftmaxModel(const ModelConfig& config)
      : SparseModel(config, /*dim=*/config.num_classes, "zeros"), k_(config.num_classes) {}

  double Gradient(const data::Batch& batch, absl::Span<const uint64_t> keys, absl::Span<const float> params,
                  absl::Span<float> grads) const override {
    StartGradient(*this, batch, keys, params, grads);
    const size_t n = batch.size();
    if (n == 0) return 0.0;
    thread_local BatchRows rows;
    thread_local std::vector<double> z;
    thread_local std::vector<float> dz;
    rows.Build(batch, keys);
    z.resize(k_);
    dz.resize(k_);
    const double inv_n = 1.0 / static_cast<double>(n);
    double loss = 0;
    for (size_t i = 0; i < n; ++i) {
      const double lse = Logits(rows, i, params, z.data());
      const int y = ClassOf(batch.data->labels[batch.begin + i], static_cast<int>(k_));
      loss += lse - z[y];
      for (uint32_t c = 0; c < k_; ++c) {
        dz[c] = static_cast<float>((std::exp(z[c] - lse) - (static_cast<int>(c) == y ? 1.0 : 0.0)) * inv_n);
      }
      if (rows.bias_row >= 0) {
        float* gb = grads.data() + rows.bias_row * k_;
        for (uint32_t c = 0; c < k_; ++c) gb[c] += dz[c];
      }
      for (size_t j = rows.begin[i]; j < rows.begin[i + 1]; ++j) {
        const float x = rows.value[j];
        float* gw = grads.data() + static_cast<size_t>(rows.row[j]) * k_;
        for (uint32_t c = 0; c < k_; ++c) gw[c] += x * dz[c];
      }
    }
    return loss * inv_n + AddSparseL2(config().l2, k_, rows.bias_row, params, grads);
  }

  void Predict(const data::Batch& batch, absl::Span<const uint64_t> keys, absl::Span<const float> params,
               std::vector<float>* out) const override {
    StartPredict(*this, batch, keys, params);
    thread_local BatchRows rows;
    thread_local std::vector<double> z;
    rows.Build(batch, keys);
    z.resize(k_);
    out->resize(batch.size() * k_);
    for (size_t i = 0; i < batch.size(); ++i) {
      const double lse = Logits(rows, i, params, z.data());
      for (uint32_t c = 0; c < k_; ++c) (*out)[i * k_ + c] = static_cast<float>(std::exp(z[c] - lse));
    }
  }

  int num_outputs() const override { return static_cast<int>(k_); }

 private:
  // Writes the logits of example i to z and returns their logsumexp.
  double Logits(const BatchRows& rows, size_t i, absl::Span<const float> params, double* z) const {
    for (uint32_t c = 0; c < k_; ++c) z[c] = rows.bias_row >= 0 ? params[rows.bias_row * k_ + c] : 0.0;
    for (size_t j = rows.begin[i]; j < rows.begin[i + 1]; ++j) {
      const double x = rows.value[j];
      const float* w = params.data() + static_cast<size_t>(rows.row[j]) * k_;
      for (uint32_t c = 0; c < k_; ++c) z[c] += w[c] * x;
    }
    const double m = *std::max_element(z, z + k_);
    double s = 0;
    for (uint32_t c = 0; c < k_; ++c) s += std::exp(z[c] - m);
    return m + std::log(s);
  }

  const uint32_t k_;
};

}  // namespace

std::unique_ptr<Model> NewSoftmax(const ModelConfig& config) { return std::make_unique<SoftmaxModel>(config); }

}  // namespace tessera::worker::internal
