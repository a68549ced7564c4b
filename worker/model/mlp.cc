// Multilayer perceptron over one dense tensor: ReLU hidden layers, softmax output. Forward and
// backward passes are row-major cblas_sgemm calls over the whole batch.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "worker/model/model_internal.h"

namespace tessera::worker::internal {
namespace {

struct Layer {
  int in;
  int out;
  size_t weights;  // offset of W (in x out, row-major) in the tensor
  size_t bias;     // offset of b (out)
};

// Per-thread buffers, grown as needed and reused across calls.
struct Scratch {
  std::vector<std::vector<float>> act;  // hidden layer l: n x out, after ReLU
  std::vector<float> probs;             // n x K: logits, then probabilities
  std::vector<float> delta;
  std::vector<float> delta_prev;
};

class MlpModel final : public Model {
 public:
  explicit MlpModel(const ModelConfig& config) : Model(config, /*sparse=*/false, /*width=*/TensorSize(config)) {
    size_t offset = 0;
    int in = static_cast<int>(config.num_features);
    std::vector<uint32_t> widths = config.hidden;
    widths.push_back(config.num_classes);
    for (uint32_t w : widths) {
      const int out = static_cast<int>(w);
      layers_.push_back({in, out, offset, offset + static_cast<size_t>(in) * out});
      offset += (static_cast<size_t>(in) + 1) * out;
      in = out;
    }
    size_ = offset;
  }

  tessera::v1::TableSpec Table() const override {
    tessera::v1::TableSpec spec;
    spec.set_kind(tessera::v1::TableSpec::DENSE);
    spec.set_size(size_);
    auto* init = spec.mutable_initializer();
    init->set_type("zeros");
    init->set_seed(config().seed);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      const bool output = l + 1 == layers_.size();
      // He-uniform keeps ReLU activations' variance; Glorot-uniform suits the linear softmax input.
      const double fan = output ? static_cast<double>(layer.in) + layer.out : static_cast<double>(layer.in);
      auto* w = init->add_segments();
      w->set_end(layer.bias);
      w->set_type("uniform");
      w->set_scale(static_cast<float>(std::sqrt(6.0 / fan)));
      auto* b = init->add_segments();
      b->set_end(layer.bias + layer.out);
      b->set_type("zeros");
    }
    return spec;
  }

  void Keys(const data::Batch& batch, std::vector<uint64_t>* keys) const override {
    CheckBatch(batch);
    keys->clear();
  }

  double Gradient(const data::Batch& batch, absl::Span<const uint64_t> keys, absl::Span<const float> params,
                  absl::Span<float> grads) const override {
    StartGradient(*this, batch, keys, params, grads);
    const int n = static_cast<int>(batch.size());
    if (n == 0) return 0.0;
    if (!Readable(batch)) return std::numeric_limits<double>::quiet_NaN();
    thread_local Scratch s;
    const int k = static_cast<int>(config().num_classes);
    double loss = Forward(batch, params, &s);

    // Softmax + cross-entropy: dL/dlogits = (p - onehot(y)) / n.
    const float inv_n = 1.0f / static_cast<float>(n);
    s.delta.resize(static_cast<size_t>(n) * k);
    for (int i = 0; i < n; ++i) {
      const int y = ClassOf(batch.data->labels[batch.begin + i], k);
      for (int c = 0; c < k; ++c) {
        const size_t at = static_cast<size_t>(i) * k + c;
        s.delta[at] = (s.probs[at] - (c == y ? 1.0f : 0.0f)) * inv_n;
      }
    }
    for (size_t l = layers_.size(); l-- > 0;) {
      const Layer& layer = layers_[l];
      const float* input = l == 0 ? Input(batch) : s.act[l - 1].data();
      // dW = A_prev^T * delta; db = column sums of delta.
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, layer.in, layer.out, n, 1.0f, input, layer.in,
                  s.delta.data(), layer.out, 0.0f, grads.data() + layer.weights, layer.out);
      float* db = grads.data() + layer.bias;
      for (int i = 0; i < n; ++i) {
        const float* d = s.delta.data() + static_cast<size_t>(i) * layer.out;
        for (int j = 0; j < layer.out; ++j) db[j] += d[j];
      }
      if (l == 0) break;
      // delta_prev = (delta * W^T) masked by ReLU'(z_prev); a_prev > 0 exactly where z_prev > 0.
      s.delta_prev.resize(static_cast<size_t>(n) * layer.in);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, layer.in, layer.out, 1.0f, s.delta.data(), layer.out,
                  params.data() + layer.weights, layer.out, 0.0f, s.delta_prev.data(), layer.in);
      const std::vector<float>& a = s.act[l - 1];
      for (size_t j = 0; j < s.delta_prev.size(); ++j) {
        if (a[j] <= 0.0f) s.delta_prev[j] = 0.0f;
      }
      s.delta.swap(s.delta_prev);
    }
    const float l2 = config().l2;
    if (l2 != 0.0f) {
      double sum = 0;
      for (const Layer& layer : layers_) {
        const size_t count = static_cast<size_t>(layer.in) * layer.out;
        const float* w = params.data() + layer.weights;
        float* g = grads.data() + layer.weights;
        for (size_t j = 0; j < count; ++j) {
          sum += static_cast<double>(w[j]) * w[j];
          g[j] += l2 * w[j];
        }
      }
      loss += 0.5 * l2 * sum;
    }
    return loss;
  }

  void Predict(const data::Batch& batch, absl::Span<const uint64_t> keys, absl::Span<const float> params,
               std::vector<float>* out) const override {
    StartPredict(*this, batch, keys, params);
    const size_t k = config().num_classes;
    if (batch.size() == 0) {
      out->clear();
      return;
    }
    if (!Readable(batch)) {
      out->assign(batch.size() * k, std::numeric_limits<float>::quiet_NaN());
      return;
    }
    thread_local Scratch s;
    Forward(batch, params, &s);
    out->assign(s.probs.begin(), s.probs.begin() + batch.size() * k);
  }

  int num_outputs() const override { return static_cast<int>(config().num_classes); }

 private:
  static uint64_t TensorSize(const ModelConfig& config) {
    uint64_t total = 0;
    uint64_t in = config.num_features;
    std::vector<uint32_t> widths = config.hidden;
    widths.push_back(config.num_classes);
    for (uint32_t out : widths) {
      total += (in + 1) * out;
      in = out;
    }
    return total;
  }

  bool Readable(const data::Batch& batch) const {
    return batch.data->is_dense() && batch.data->num_features == config().num_features;
  }

  const float* Input(const data::Batch& batch) const {
    return batch.data->dense.data() + batch.begin * config().num_features;
  }

  // Fills s->act and s->probs (probabilities) for a non-empty readable batch; returns the mean
  // cross-entropy.
  double Forward(const data::Batch& batch, absl::Span<const float> params, Scratch* s) const {
    const int n = static_cast<int>(batch.size());
    s->act.resize(layers_.size() - 1);
    const float* input = Input(batch);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      const bool output = l + 1 == layers_.size();
      std::vector<float>& z = output ? s->probs : s->act[l];
      z.resize(static_cast<size_t>(n) * layer.out);
      const float* b = params.data() + layer.bias;
      for (int i = 0; i < n; ++i) std::memcpy(z.data() + static_cast<size_t>(i) * layer.out, b, layer.out * sizeof(float));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, layer.out, layer.in, 1.0f, input, layer.in,
                  params.data() + layer.weights, layer.out, 1.0f, z.data(), layer.out);
      if (!output) {
        for (float& v : z) v = v > 0.0f ? v : 0.0f;
      }
      input = z.data();
    }
    const int k = layers_.back().out;
    double loss = 0;
    for (int i = 0; i < n; ++i) {
      float* z = s->probs.data() + static_cast<size_t>(i) * k;
      const double m = *std::max_element(z, z + k);
      double sum = 0;
      for (int c = 0; c < k; ++c) sum += std::exp(z[c] - m);
      const double lse = m + std::log(sum);
      const int y = ClassOf(batch.data->labels[batch.begin + i], k);
      loss += lse - z[y];
      for (int c = 0; c < k; ++c) z[c] = static_cast<float>(std::exp(z[c] - lse));
    }
    return loss / n;
  }

  std::vector<Layer> layers_;
  size_t size_ = 0;
};

}  // namespace

std::unique_ptr<Model> NewMlp(const ModelConfig& config) { return std::make_unique<MlpModel>(config); }

}  // namespace tessera::worker::internal
