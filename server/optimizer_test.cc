// One parameterized suite that every optimizer must pass: several steps against a reference written
// here, independently, in double precision; learning-rate scaling; slot strides; convergence.
#include "server/optimizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace tessera::server {
namespace {

using tessera::v1::OptimizerSpec;

// Reference state of one weight and its update rule; `t` is the 1-based step number.
struct RefState {
  double w = 0, a = 0, b = 0;
  double avg = 0;  // moving average of w (cases with average_decay)
};
using RefStep = std::function<void(RefState&, double g, int t, double lr_scale)>;

struct Case {
  std::string name;
  OptimizerSpec spec;
  std::function<void(RefState&)> init;  // slots of a fresh weight
  RefStep step;
};

OptimizerSpec Spec(const std::string& text_type, std::function<void(OptimizerSpec&)> f) {
  OptimizerSpec s;
  s.set_type(text_type);
  f(s);
  return s;
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  cases.push_back({"sgd", Spec("sgd", [](auto& s) { s.set_learning_rate(0.1f); }), [](RefState&) {},
                   [](RefState& r, double g, int, double k) { r.w -= 0.1 * k * g; }});
  cases.push_back({"sgd_momentum", Spec("sgd", [](auto& s) { s.set_learning_rate(0.05f); s.set_momentum(0.9f); }),
                   [](RefState& r) { r.a = 0; },
                   [](RefState& r, double g, int, double k) {
                     r.a = 0.9 * r.a + g;
                     r.w -= 0.05 * k * r.a;
                   }});
  cases.push_back({"adagrad",
                   Spec("adagrad", [](auto& s) { s.set_learning_rate(0.5f); s.set_initial_accumulator(0.1f); s.set_epsilon(1e-6f); }),
                   [](RefState& r) { r.a = 0.1; },
                   [](RefState& r, double g, int, double k) {
                     r.a += g * g;
                     r.w -= 0.5 * k * g / (std::sqrt(r.a) + 1e-6);
                   }});
  cases.push_back({"adam",
                   Spec("adam", [](auto& s) { s.set_learning_rate(0.01f); s.set_beta1(0.8f); s.set_beta2(0.95f); s.set_epsilon(1e-7f); }),
                   [](RefState& r) { r.a = r.b = 0; },
                   [](RefState& r, double g, int t, double k) {
                     r.a = 0.8 * r.a + 0.2 * g;
                     r.b = 0.95 * r.b + 0.05 * g * g;
                     const double mhat = r.a / (1 - std::pow(0.8, t));
                     const double vhat = r.b / (1 - std::pow(0.95, t));
                     r.w -= 0.01 * k * mhat / (std::sqrt(vhat) + 1e-7);
                   }});
  cases.push_back({"ftrl",
                   Spec("ftrl", [](auto& s) { s.set_alpha(0.1f); s.set_beta(1.0f); s.set_l1(0.01f); s.set_l2(0.1f); }),
                   [](RefState& r) { r.a = r.b = 0; },
                   [](RefState& r, double g, int, double k) {
                     // z = a, n = b (McMahan et al. 2013, Algorithm 1).
                     const double alpha = 0.1 * k;
                     const double sigma = (std::sqrt(r.b + g * g) - std::sqrt(r.b)) / alpha;
                     r.a += g - sigma * r.w;
                     r.b += g * g;
                     if (std::fabs(r.a) <= 0.01) {
                       r.w = 0;
                     } else {
                       r.w = -(r.a - (r.a > 0 ? 0.01 : -0.01)) / ((1.0 + std::sqrt(r.b)) / alpha + 0.1);
                     }
                   }});
  // Every optimizer again with a moving average of its weights (one more slot, checked below).
  const size_t base = cases.size();
  for (size_t i = 0; i < base; ++i) {
    Case c = cases[i];
    c.name += "_averaged";
    c.spec.set_average_decay(0.75f);
    cases.push_back(std::move(c));
  }
  return cases;
}

class OptimizerSuite : public ::testing::TestWithParam<Case> {
 protected:
  std::unique_ptr<Optimizer> Make() {
    auto opt = Optimizer::Create(GetParam().spec);
    EXPECT_TRUE(opt.ok()) << opt.status();
    return std::move(opt).value();
  }
};

// Gradients for element i at step t: varied signs and magnitudes, some zero.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

double Grad(int i, int t) { return std::sin(1.3 * i + 0.7 * t) * (1 + i) * (t % 4 == 3 ? 0.0 : 1.0) + 0.05 * t; }

TEST_P(OptimizerSuite, MatchesReferenceOverSeveralSteps) {
  auto opt = Make();
  constexpr int n = 7;
  std::vector<float> w(n), slots(std::max(1, opt->num_slots()) * n, -99.0f);
  std::vector<RefState> ref(n);
  for (int i = 0; i < n; ++i) {
    w[i] = 0.1f * (i - 3);
    ref[i].w = ref[i].avg = w[i];
    GetParam().init(ref[i]);
  }
  const double decay = GetParam().spec.average_decay();
  ASSERT_EQ(opt->average_slot() >= 0, decay > 0);
  opt->InitSlots(w.data(), slots.data(), n, n);
  uint32_t step = 0;
  for (int t = 1; t <= 12; ++t) {
    const double scale = t == 5 ? 0.5 : 1.0;
    std::vector<float> g(n);
    for (int i = 0; i < n; ++i) {
      g[i] = static_cast<float>(Grad(i, t));
      GetParam().step(ref[i], g[i], t, scale);
      ref[i].avg += (1 - decay) * (ref[i].w - ref[i].avg);
    }
    opt->Apply(w.data(), slots.data(), n, g.data(), n, t == 5 ? 0.5f : 1.0f, &step);
    for (int i = 0; i < n; ++i) {
      ASSERT_NEAR(w[i], ref[i].w, 1e-5 + 1e-4 * std::fabs(ref[i].w)) << GetParam().name << " step " << t << " element " << i;
      if (decay > 0) {
        const float avg = slots[opt->average_slot() * n + i];
        ASSERT_NEAR(avg, ref[i].avg, 1e-5 + 1e-4 * std::fabs(ref[i].avg)) << GetParam().name << " average, step " << t;
        if (t >= 3) {
          ASSERT_NE(avg, w[i]) << "the average lags the weights";
        }
      }
    }
  }
  EXPECT_EQ(step, 12u);
}

TEST_P(OptimizerSuite, SlotStrideOnlyChangesWhereSlotsLive) {
  auto opt = Make();
  constexpr int n = 5, stride = 16;
  std::vector<float> w1(n, 0.3f), w2(n, 0.3f);
  std::vector<float> s1(std::max(1, opt->num_slots()) * n), s2(std::max(1, opt->num_slots()) * stride, 7.0f);
  opt->InitSlots(w1.data(), s1.data(), n, n);
  opt->InitSlots(w2.data(), s2.data(), n, stride);
  uint32_t t1 = 0, t2 = 0;
  for (int t = 1; t <= 4; ++t) {
    std::vector<float> g(n);
    for (int i = 0; i < n; ++i) g[i] = static_cast<float>(Grad(i, t));
    opt->Apply(w1.data(), s1.data(), n, g.data(), n, 1.0f, &t1);
    opt->Apply(w2.data(), s2.data(), stride, g.data(), n, 1.0f, &t2);
  }
  EXPECT_EQ(w1, w2);
  // Slot memory past each run is untouched.
  for (int k = 0; k < opt->num_slots(); ++k) {
    for (int i = n; i < stride; ++i) EXPECT_EQ(s2[k * stride + i], 7.0f);
  }
}

TEST_P(OptimizerSuite, ConvergesOnAQuadratic) {
  auto opt = Make();
  float w = 0.0f;
  std::vector<float> slots(std::max(1, opt->num_slots()));
  opt->InitSlots(&w, slots.data(), 1, 1);
  uint32_t step = 0;
  for (int t = 0; t < 3000; ++t) {
    const float g = w - 1.5f;  // f(w) = (w - 1.5)^2 / 2
    opt->Apply(&w, slots.data(), 1, &g, 1, 1.0f, &step);
  }
  // FTRL's l1/l2 shrink the optimum a little; everyone else lands on it.
  EXPECT_NEAR(w, 1.5f, GetParam().name == "ftrl" ? 0.2f : 0.02f) << GetParam().name;
}

INSTANTIATE_TEST_SUITE_P(AllOptimizers, OptimizerSuite, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

TEST(OptimizerCreateTest, RejectsBadHyperParametersByName) {
  auto check = [](OptimizerSpec spec, const std::string& needle) {
    auto opt = Optimizer::Create(spec);
    ASSERT_FALSE(opt.ok()) << spec.ShortDebugString();
    EXPECT_EQ(opt.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(opt.status().message()), ::testing::HasSubstr(needle));
  };
  check(Spec("rmsprop", [](auto&) {}), "optimizer.type = 'rmsprop'");
  check(Spec("sgd", [](auto& s) { s.set_learning_rate(-0.1f); }), "learning_rate = -0.1");
  check(Spec("adagrad", [](auto& s) { s.set_learning_rate(NAN); }), "learning_rate");
  check(Spec("sgd", [](auto& s) { s.set_momentum(1.0f); }), "momentum");
  check(Spec("adam", [](auto& s) { s.set_beta1(1.0f); }), "beta1");
  check(Spec("adam", [](auto& s) { s.set_beta2(-0.5f); }), "beta2");
  check(Spec("ftrl", [](auto& s) { s.set_alpha(0.0f); }), "alpha");
  check(Spec("ftrl", [](auto& s) { s.set_l1(-1.0f); }), "l1");
  check(Spec("adam", [](auto& s) { s.set_average_decay(1.0f); }), "average_decay = 1");
  check(Spec("sgd", [](auto& s) { s.set_average_decay(-0.5f); }), "average_decay = -0.5");
}

TEST(OptimizerCreateTest, DefaultsAndSlots) {
  EXPECT_EQ((*Optimizer::Create(Spec("", [](auto&) {})))->name(), "sgd");
  EXPECT_EQ((*Optimizer::Create(Spec("sgd", [](auto&) {})))->num_slots(), 0);
  EXPECT_EQ((*Optimizer::Create(Spec("sgd", [](auto& s) { s.set_momentum(0.5f); })))->num_slots(), 1);
  EXPECT_EQ((*Optimizer::Create(Spec("adagrad", [](auto&) {})))->num_slots(), 1);
  EXPECT_EQ((*Optimizer::Create(Spec("adam", [](auto&) {})))->num_slots(), 2);
  EXPECT_TRUE((*Optimizer::Create(Spec("adam", [](auto&) {})))->uses_step());
  EXPECT_EQ((*Optimizer::Create(Spec("ftrl", [](auto&) {})))->num_slots(), 2);
  EXPECT_EQ((*Optimizer::Create(Spec("adagrad", [](auto&) {})))->average_slot(), -1);
  auto averaged = *Optimizer::Create(Spec("adam", [](auto& s) { s.set_average_decay(0.99f); }));
  EXPECT_EQ(averaged->name(), "adam");
  EXPECT_EQ(averaged->num_slots(), 3);
  EXPECT_EQ(averaged->average_slot(), 2);
  EXPECT_TRUE(averaged->uses_step());
  EXPECT_EQ((*Optimizer::Create(Spec("sgd", [](auto& s) { s.set_average_decay(0.5f); })))->average_slot(), 0);
}

}  // namespace
}  // namespace tessera::server
