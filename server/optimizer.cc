#include "server/optimizer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tessera::server {
namespace {

using tessera::v1::OptimizerSpec;

absl::Status Bad(absl::string_view field, double value, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer.", field, " = ", value, " is invalid: ", want));
}

// The update loops, built for AVX-512, AVX2 and the baseline and chosen at load time (GCC function
// multi-versioning); this file is compiled with -O3 -fno-math-errno so sqrt vectorizes.
#define TESSERA_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

TESSERA_VECTOR_CLONES void SgdKernel(float* __restrict w, const float* __restrict g, int64_t n, float lr) {
  for (int64_t i = 0; i < n; ++i) w[i] -= lr * g[i];
}

TESSERA_VECTOR_CLONES void MomentumKernel(float* __restrict w, float* __restrict v, const float* __restrict g,
                                          int64_t n, float lr, float mu) {
  for (int64_t i = 0; i < n; ++i) {
    v[i] = mu * v[i] + g[i];
    w[i] -= lr * v[i];
  }
}

TESSERA_VECTOR_CLONES void AdagradKernel(float* __restrict w, float* __restrict acc, const float* __restrict g,
                                         int64_t n, float lr, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    acc[i] += g[i] * g[i];
    w[i] -= lr * g[i] / (std::sqrt(acc[i]) + eps);
  }
}

TESSERA_VECTOR_CLONES void AdamKernel(float* __restrict w, float* __restrict m, float* __restrict v,
                                      const float* __restrict g, int64_t n, float b1, float b2, float step_size,
                                      float inv_sqrt_c2, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    w[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_c2 + eps);
  }
}

TESSERA_VECTOR_CLONES void FtrlKernel(float* __restrict w, float* __restrict z, float* __restrict nn,
                                      const float* __restrict g, int64_t n, float alpha, float beta, float l1,
                                      float l2) {
  for (int64_t i = 0; i < n; ++i) {
    const float n_new = nn[i] + g[i] * g[i];
    const float sigma = (std::sqrt(n_new) - std::sqrt(nn[i])) / alpha;
    z[i] += g[i] - sigma * w[i];
    nn[i] = n_new;
    const float sign = z[i] < 0 ? -1.0f : 1.0f;
    const float shrunk = -(z[i] - sign * l1) / ((beta + std::sqrt(n_new)) / alpha + l2);
    w[i] = std::fabs(z[i]) <= l1 ? 0.0f : shrunk;
  }
}

class Sgd final : public Optimizer {
 public:
  Sgd(float lr, float momentum) : lr_(lr), momentum_(momentum) {}
  std::string name() const override { return "sgd"; }
  int num_slots() const override { return momentum_ > 0 ? 1 : 0; }
  void InitSlots(const float*, float* slots, int64_t n, int64_t stride) const override {
    for (int k = 0; k < num_slots(); ++k) std::fill_n(slots + k * stride, n, 0.0f);
  }
  void Apply(float* w, float* slots, int64_t stride, const float* g, int64_t n, float lr_scale,
             uint32_t* step) const override {
    const float lr = lr_ * lr_scale;
    ++*step;
    if (momentum_ > 0) {
      MomentumKernel(w, slots, g, n, lr, momentum_);
    } else {
      SgdKernel(w, g, n, lr);
    }
  }

 private:
  const float lr_, momentum_;
};

class Adagrad final : public Optimizer {
 public:
  Adagrad(float lr, float init, float eps) : lr_(lr), init_(init), eps_(eps) {}
  std::string name() const override { return "adagrad"; }
  int num_slots() const override { return 1; }
  void InitSlots(const float*, float* slots, int64_t n, int64_t stride) const override {
    std::fill_n(slots, n, init_);
  }
  void Apply(float* w, float* slots, int64_t stride, const float* g, int64_t n, float lr_scale,
             uint32_t* step) const override {
    const float lr = lr_ * lr_scale;
    ++*step;
    AdagradKernel(w, slots, g, n, lr, eps_);
  }

 private:
  const float lr_, init_, eps_;
};

class Adam final : public Optimizer {
 public:
  Adam(float lr, float b1, float b2, float eps) : lr_(lr), b1_(b1), b2_(b2), eps_(eps) {}
  std::string name() const override { return "adam"; }
  int num_slots() const override { return 2; }
  bool uses_step() const override { return true; }
  void InitSlots(const float*, float* slots, int64_t n, int64_t stride) const override {
    std::fill_n(slots, n, 0.0f);
    std::fill_n(slots + stride, n, 0.0f);
  }
  void Apply(float* w, float* slots, int64_t stride, const float* g, int64_t n, float lr_scale,
             uint32_t* step) const override {
    float* m = slots;
    float* v = slots + stride;
    const uint32_t t = ++*step;
    const double c1 = 1.0 - std::pow(static_cast<double>(b1_), t);
    const double c2 = 1.0 - std::pow(static_cast<double>(b2_), t);
    // w -= lr * m_hat / (sqrt(v_hat) + eps), with m_hat = m / c1 and v_hat = v / c2.
    const float step_size = static_cast<float>(lr_ * lr_scale / c1);
    const float inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(c2));
    AdamKernel(w, m, v, g, n, b1_, b2_, step_size, inv_sqrt_c2, eps_);
  }

 private:
  const float lr_, b1_, b2_, eps_;
};

// FTRL-Proximal, per-coordinate learning rates (McMahan et al., "Ad Click Prediction", 2013).
class Ftrl final : public Optimizer {
 public:
  Ftrl(float alpha, float beta, float l1, float l2) : alpha_(alpha), beta_(beta), l1_(l1), l2_(l2) {}
  std::string name() const override { return "ftrl"; }
  int num_slots() const override { return 2; }
  void InitSlots(const float*, float* slots, int64_t n, int64_t stride) const override {
    std::fill_n(slots, n, 0.0f);
    std::fill_n(slots + stride, n, 0.0f);
  }
  void Apply(float* w, float* slots, int64_t stride, const float* g, int64_t n, float lr_scale,
             uint32_t* step) const override {
    float* z = slots;
    float* nn = slots + stride;
    const float alpha = alpha_ * lr_scale;
    ++*step;
    FtrlKernel(w, z, nn, g, n, alpha, beta_, l1_, l2_);
  }

 private:
  const float alpha_, beta_, l1_, l2_;
};

TESSERA_VECTOR_CLONES void AverageKernel(const float* __restrict w, float* __restrict avg, int64_t n, float rate) {
  for (int64_t i = 0; i < n; ++i) avg[i] += rate * (w[i] - avg[i]);
}

// Wraps an optimizer and keeps an exponential moving average of the weights in one more slot:
// after each update of a run, avg += (1 - decay) * (w - avg).
class Averaged final : public Optimizer {
 public:
  Averaged(std::unique_ptr<Optimizer> inner, float decay)
      : inner_(std::move(inner)), inner_slots_(inner_->num_slots()), rate_(1.0f - decay) {}
  std::string name() const override { return inner_->name(); }
  int num_slots() const override { return inner_slots_ + 1; }
  int average_slot() const override { return inner_slots_; }
  bool uses_step() const override { return inner_->uses_step(); }
  void InitSlots(const float* w, float* slots, int64_t n, int64_t stride) const override {
    inner_->InitSlots(w, slots, n, stride);
    std::copy_n(w, n, slots + inner_slots_ * stride);
  }
  void Apply(float* w, float* slots, int64_t stride, const float* g, int64_t n, float lr_scale,
             uint32_t* step) const override {
    inner_->Apply(w, slots, stride, g, n, lr_scale, step);
    AverageKernel(w, slots + inner_slots_ * stride, n, rate_);
  }

 private:
  const std::unique_ptr<Optimizer> inner_;
  const int inner_slots_;
  const float rate_;
};

absl::StatusOr<std::unique_ptr<Optimizer>> CreateBase(const OptimizerSpec& spec) {
  const std::string& type = spec.type().empty() ? std::string("sgd") : spec.type();
  auto positive = [](float v) { return std::isfinite(v) && v > 0; };
  if (type == "sgd" || type == "adagrad" || type == "adam") {
    const float lr = spec.has_learning_rate() ? spec.learning_rate() : (type == "adam" ? 0.001f : 0.01f);
    if (!positive(lr)) return Bad("learning_rate", lr, "must be a finite number > 0");
    const float eps = spec.has_epsilon() ? spec.epsilon() : 1e-8f;
    if (!(eps >= 0) || !std::isfinite(eps)) return Bad("epsilon", eps, "must be >= 0");
    if (type == "sgd") {
      const float mu = spec.momentum();
      if (!(mu >= 0 && mu < 1)) return Bad("momentum", mu, "must be in [0, 1)");
      return std::unique_ptr<Optimizer>(new Sgd(lr, mu));
    }
    if (type == "adagrad") {
      const float init = spec.has_initial_accumulator() ? spec.initial_accumulator() : 0.1f;
      if (!(init >= 0) || !std::isfinite(init)) return Bad("initial_accumulator", init, "must be >= 0");
      if (init == 0 && eps == 0) return Bad("epsilon", eps, "must be > 0 when initial_accumulator is 0");
      return std::unique_ptr<Optimizer>(new Adagrad(lr, init, eps));
    }
    const float b1 = spec.has_beta1() ? spec.beta1() : 0.9f;
    const float b2 = spec.has_beta2() ? spec.beta2() : 0.999f;
    if (!(b1 >= 0 && b1 < 1)) return Bad("beta1", b1, "must be in [0, 1)");
    if (!(b2 >= 0 && b2 < 1)) return Bad("beta2", b2, "must be in [0, 1)");
    return std::unique_ptr<Optimizer>(new Adam(lr, b1, b2, eps));
  }
  if (type == "ftrl") {
    const float alpha = spec.has_alpha() ? spec.alpha() : 0.05f;
    const float beta = spec.has_beta() ? spec.beta() : 1.0f;
    if (!positive(alpha)) return Bad("alpha", alpha, "must be a finite number > 0");
    if (!(beta >= 0) || !std::isfinite(beta)) return Bad("beta", beta, "must be >= 0");
    if (!(spec.l1() >= 0) || !std::isfinite(spec.l1())) return Bad("l1", spec.l1(), "must be >= 0");
    if (!(spec.l2() >= 0) || !std::isfinite(spec.l2())) return Bad("l2", spec.l2(), "must be >= 0");
    return std::unique_ptr<Optimizer>(new Ftrl(alpha, beta, spec.l1(), spec.l2()));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer.type = '", type, "' is unknown (expected sgd, adagrad, adam or ftrl)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> Optimizer::Create(const OptimizerSpec& spec) {
  const float decay = spec.average_decay();
  if (!(decay >= 0 && decay < 1)) return Bad("average_decay", decay, "must be in [0, 1)");
  ASSIGN_OR_RETURN(std::unique_ptr<Optimizer> base, CreateBase(spec));
  if (decay == 0) return base;
  return std::unique_ptr<Optimizer>(new Averaged(std::move(base), decay));
}

}  // namespace tessera::server
