#include "worker/model/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/blas.h"
#include "worker/model/metrics.h"

namespace tessera::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { UseSingleThreadedBlas(); }
};

std::unique_ptr<Model> MustCreate(const ModelConfig& config) {
  auto model = Model::Create(config);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

ModelConfig Config(const std::string& type) {
  ModelConfig c;
  c.type = type;
  return c;
}

data::Batch All(const data::Dataset& d) { return data::Batch{&d, 0, d.size()}; }

// Random sparse dataset: `nnz` distinct ids in [1, num_features] per example, values in [-1.5, 1.5],
// labels in [0, classes).
data::Dataset RandomSparse(size_t n, uint64_t num_features, int nnz, int classes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint64_t> id(1, num_features);
  std::uniform_real_distribution<float> value(-1.5f, 1.5f);
  std::uniform_int_distribution<int> label(0, classes - 1);
  data::Dataset d;
  d.num_features = num_features + 1;
  d.offsets.push_back(0);
  for (size_t i = 0; i < n; ++i) {
    std::vector<uint64_t> ids;
    while (static_cast<int>(ids.size()) < nnz) {
      const uint64_t f = id(rng);
      if (std::find(ids.begin(), ids.end(), f) == ids.end()) ids.push_back(f);
    }
    for (uint64_t f : ids) {
      d.ids.push_back(f);
      d.values.push_back(value(rng));
    }
    d.offsets.push_back(d.ids.size());
    d.labels.push_back(static_cast<float>(label(rng)));
  }
  return d;
}

data::Dataset RandomDense(size_t n, uint64_t width, int classes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::uniform_int_distribution<int> label(0, classes - 1);
  data::Dataset d;
  d.num_features = width;
  for (size_t i = 0; i < n * width; ++i) d.dense.push_back(value(rng));
  for (size_t i = 0; i < n; ++i) d.labels.push_back(static_cast<float>(label(rng)));
  return d;
}

// Stand-in for the server's initializer: same types and segments, not the same random stream.
float Draw(const std::string& type, float scale, std::mt19937_64& rng) {
  if (type == "uniform") return std::uniform_real_distribution<float>(-scale, scale)(rng);
  if (type == "normal") return std::normal_distribution<float>(0.0f, scale)(rng);
  if (type == "constant") return scale;
  return 0.0f;
}

// An in-process parameter store for one table, with plain SGD.
class Store {
 public:
  explicit Store(const tessera::v1::TableSpec& spec) : spec_(spec), rng_(spec.initializer().seed()) {
    const auto& init = spec.initializer();
    if (spec.kind() == tessera::v1::TableSpec::DENSE) {
      dense_.resize(spec.size());
      int seg = 0;
      for (uint64_t g = 0; g < spec.size(); ++g) {
        while (seg < init.segments_size() && init.segments(seg).end() <= g) ++seg;
        dense_[g] = seg < init.segments_size() ? Draw(init.segments(seg).type(), init.segments(seg).scale(), rng_)
                                               : Draw(init.type(), init.scale(), rng_);
      }
    }
  }

  std::vector<float> Pull(const std::vector<uint64_t>& keys) {
    if (spec_.kind() == tessera::v1::TableSpec::DENSE) return dense_;
    std::vector<float> out;
    for (uint64_t key : keys) {
      auto it = rows_.find(key);
      if (it == rows_.end()) {
        std::vector<float> row(spec_.dim());
        for (float& v : row) v = Draw(spec_.initializer().type(), spec_.initializer().scale(), rng_);
        it = rows_.emplace(key, row).first;
      }
      out.insert(out.end(), it->second.begin(), it->second.end());
    }
    return out;
  }

  void Push(const std::vector<uint64_t>& keys, const std::vector<float>& grads, float lr) {
    if (spec_.kind() == tessera::v1::TableSpec::DENSE) {
      for (size_t j = 0; j < dense_.size(); ++j) dense_[j] -= lr * grads[j];
      return;
    }
    for (size_t r = 0; r < keys.size(); ++r) {
      for (uint32_t j = 0; j < spec_.dim(); ++j) rows_[keys[r]][j] -= lr * grads[r * spec_.dim() + j];
    }
  }

 private:
  tessera::v1::TableSpec spec_;
  std::mt19937_64 rng_;
  std::map<uint64_t, std::vector<float>> rows_;
  std::vector<float> dense_;
};

// Trains with SGD; returns {mean loss of the first 10 steps, of the last 10 steps}.
std::pair<double, double> Train(const Model& model, const data::Dataset& d, Store* store, int steps,
                                size_t batch_size, float lr) {
  double first = 0;
  double last = 0;
  std::vector<uint64_t> keys;
  std::vector<float> grads;
  for (int step = 0; step < steps; ++step) {
    const size_t begin = (step * batch_size) % d.size();
    const data::Batch batch{&d, begin, std::min(begin + batch_size, d.size())};
    model.Keys(batch, &keys);
    const std::vector<float> params = store->Pull(keys);
    grads.assign(params.size(), 0.0f);
    const double loss = model.Gradient(batch, keys, params, absl::MakeSpan(grads));
    EXPECT_TRUE(std::isfinite(loss));
    if (step < 10) first += loss / 10;
    if (step >= steps - 10) last += loss / 10;
    store->Push(keys, grads, lr);
  }
  return {first, last};
}

EvalAccumulator Evaluate(const Model& model, const data::Dataset& d, Store* store) {
  std::vector<uint64_t> keys;
  model.Keys(All(d), &keys);
  std::vector<float> predictions;
  model.Predict(All(d), keys, store->Pull(keys), &predictions);
  EvalAccumulator acc;
  acc.Add(predictions, d.labels, model.num_outputs());
  return acc;
}

// Compares Gradient() with central differences on every parameter, and along one random
// direction of all parameters (a tighter check of the whole vector).
void CheckGradient(const Model& model, const data::Batch& batch, const std::vector<uint64_t>& keys,
                   std::vector<float> params, double rtol, double atol) {
  std::vector<float> grads(params.size());
  std::vector<float> scratch(params.size());
  model.Gradient(batch, keys, params, absl::MakeSpan(grads));
  auto loss = [&](const std::vector<float>& p) { return model.Gradient(batch, keys, p, absl::MakeSpan(scratch)); };
  const float eps = 1e-3f;
  int bad = 0;
  double max_grad = 0;
  for (size_t j = 0; j < params.size(); ++j) {
    const float saved = params[j];
    params[j] = saved + eps;
    const float hi = params[j];
    const double lp = loss(params);
    params[j] = saved - eps;
    const float lo = params[j];
    const double lm = loss(params);
    params[j] = saved;
    const double numeric = (lp - lm) / (static_cast<double>(hi) - lo);
    const double tol = atol + rtol * std::max(std::fabs(numeric), std::fabs(static_cast<double>(grads[j])));
    max_grad = std::max(max_grad, std::fabs(numeric));
    if (std::fabs(numeric - grads[j]) > tol && ++bad <= 10) {
      ADD_FAILURE() << "param " << j << ": analytic " << grads[j] << " numeric " << numeric;
    }
  }
  EXPECT_EQ(bad, 0);
  EXPECT_GT(max_grad, 1e-3) << "degenerate check: all gradients vanish";

  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> dir(params.size());
  double analytic = 0;
  for (size_t j = 0; j < params.size(); ++j) {
    dir[j] = normal(rng);
    analytic += static_cast<double>(dir[j]) * grads[j];
  }
  std::vector<float> plus = params;
  std::vector<float> minus = params;
  for (size_t j = 0; j < params.size(); ++j) {
    plus[j] += eps * dir[j];
    minus[j] -= eps * dir[j];
  }
  const double numeric = (loss(plus) - loss(minus)) / (2 * eps);
  EXPECT_NEAR(analytic, numeric, 2e-3 * std::fabs(analytic) + 10 * atol) << "directional derivative";
}

std::vector<float> RandomParams(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> p(n);
  for (float& v : p) v = normal(rng);
  return p;
}

// ---- Create / Table ----

TEST_F(ModelTest, CreateRejectsBadConfigs) {
  struct Case {
    ModelConfig config;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({Config("svm"), "model.type = 'svm' is unknown (expected logistic, softmax, fm or mlp)"});
  cases.push_back({Config(""), "model.type = '' is unknown"});
  ModelConfig c = Config("logistic");
  c.num_classes = 3;
  cases.push_back({c, "model.num_classes = 3 must be 2 for logistic"});
  c = Config("softmax");
  c.num_classes = 1;
  cases.push_back({c, "model.num_classes = 1 must be at least 2 for softmax"});
  c.num_classes = 70000;
  cases.push_back({c, "model.num_classes = 70000 exceeds the sparse row limit"});
  c = Config("fm");
  c.factor_dim = 0;
  cases.push_back({c, "model.factor_dim = 0 must be in [1, 65535]"});
  c = Config("mlp");
  cases.push_back({c, "model.num_features = 0 is required for mlp"});
  c.num_features = 10;
  c.hidden = {4, 0};
  c.num_classes = 3;
  cases.push_back({c, "model.hidden[1] = 0 must be at least 1"});
  c.hidden = {1u << 31, 1u << 31};
  cases.push_back({c, "parameters"});
  c = Config("logistic");
  c.l2 = -1;
  cases.push_back({c, "model.l2 = -1 must be finite and >= 0"});
  for (const Case& t : cases) {
    auto model = Model::Create(t.config);
    ASSERT_FALSE(model.ok()) << t.message;
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(model.status().message()), HasSubstr(t.message));
  }
}

TEST_F(ModelTest, TablesOfSparseModels) {
  auto logistic = MustCreate(Config("logistic"));
  auto t = logistic->Table();
  EXPECT_TRUE(logistic->sparse());
  EXPECT_EQ(t.kind(), tessera::v1::TableSpec::SPARSE);
  EXPECT_EQ(t.dim(), 1u);
  EXPECT_EQ(t.initializer().type(), "zeros");
  EXPECT_TRUE(t.name().empty());
  EXPECT_FALSE(t.has_optimizer());
  EXPECT_EQ(logistic->num_outputs(), 1);
  EXPECT_EQ(logistic->NumParams(5), 5u);

  ModelConfig c = Config("softmax");
  c.num_classes = 10;
  auto softmax = MustCreate(c);
  EXPECT_EQ(softmax->Table().dim(), 10u);
  EXPECT_EQ(softmax->num_outputs(), 10);
  EXPECT_EQ(softmax->NumParams(3), 30u);

  c = Config("fm");
  c.factor_dim = 4;
  c.seed = 42;
  auto fm = MustCreate(c);
  t = fm->Table();
  EXPECT_EQ(t.dim(), 5u);
  EXPECT_EQ(t.initializer().type(), "normal");
  EXPECT_GT(t.initializer().scale(), 0.0f);
  EXPECT_EQ(t.initializer().seed(), 42u);
  EXPECT_EQ(fm->num_outputs(), 1);
}

TEST_F(ModelTest, MlpTableLayoutAndInitializer) {
  ModelConfig c = Config("mlp");
  c.num_features = 784;
  c.hidden = {256, 128};
  c.num_classes = 10;
  auto mlp = MustCreate(c);
  EXPECT_FALSE(mlp->sparse());
  const auto t = mlp->Table();
  EXPECT_EQ(t.kind(), tessera::v1::TableSpec::DENSE);
  const uint64_t w1 = 784 * 256, b1 = w1 + 256, w2 = b1 + 256 * 128, b2 = w2 + 128, w3 = b2 + 128 * 10, b3 = w3 + 10;
  EXPECT_EQ(t.size(), b3);
  EXPECT_EQ(mlp->NumParams(0), b3);
  ASSERT_EQ(t.initializer().segments_size(), 6);
  std::vector<uint64_t> ends;
  for (const auto& s : t.initializer().segments()) ends.push_back(s.end());
  EXPECT_THAT(ends, ElementsAre(w1, b1, w2, b2, w3, b3));
  EXPECT_EQ(t.initializer().segments(0).type(), "uniform");
  EXPECT_FLOAT_EQ(t.initializer().segments(0).scale(), std::sqrt(6.0f / 784));  // He
  EXPECT_EQ(t.initializer().segments(1).type(), "zeros");
  EXPECT_FLOAT_EQ(t.initializer().segments(2).scale(), std::sqrt(6.0f / 256));
  EXPECT_FLOAT_EQ(t.initializer().segments(4).scale(), std::sqrt(6.0f / (128 + 10)));  // Glorot
  EXPECT_EQ(t.initializer().segments(5).type(), "zeros");
  EXPECT_EQ(mlp->num_outputs(), 10);
}

// ---- Keys ----

TEST_F(ModelTest, KeysOfSparseBatchAreSortedUniqueWithBias) {
  data::Dataset d;
  d.num_features = 100;
  d.offsets = {0, 3, 5, 7};
  d.ids = {9, 3, 50, 3, 7, 99, 1};
  d.values = {1, 1, 1, 1, 1, 1, 1};
  d.labels = {0, 1, 0};
  for (const char* type : {"logistic", "softmax", "fm"}) {
    auto model = MustCreate(Config(type));
    std::vector<uint64_t> keys = {123};  // replaced
    model->Keys(All(d), &keys);
    EXPECT_THAT(keys, ElementsAre(1, 3, 7, 9, 50, 99, kBiasKey)) << type;
    model->Keys(data::Batch{&d, 1, 2}, &keys);
    EXPECT_THAT(keys, ElementsAre(3, 7, kBiasKey)) << type;
    model->Keys(data::Batch{&d, 2, 2}, &keys);
    EXPECT_THAT(keys, ElementsAre(kBiasKey)) << type;
  }
}

TEST_F(ModelTest, KeysOfDenseBatchAreNonZeroColumns) {
  data::Dataset d;
  d.num_features = 5;
  d.dense = {0, 1, 0, 0, 0,  //
             0, 0, 0, 2, 0,  //
             3, 0, 0, 0, 0};
  d.labels = {0, 1, 2};
  ModelConfig c = Config("softmax");
  c.num_classes = 3;
  auto model = MustCreate(c);
  std::vector<uint64_t> keys;
  model->Keys(All(d), &keys);
  EXPECT_THAT(keys, ElementsAre(0, 1, 3, kBiasKey));
  model->Keys(data::Batch{&d, 0, 2}, &keys);
  EXPECT_THAT(keys, ElementsAre(1, 3, kBiasKey));

  c = Config("mlp");
  c.num_features = 5;
  c.num_classes = 3;
  auto mlp = MustCreate(c);
  keys = {1, 2};
  mlp->Keys(All(d), &keys);
  EXPECT_TRUE(keys.empty());
}

// ---- Validate ----

TEST_F(ModelTest, ValidateChecksDataAgainstModel) {
  data::Dataset sparse = RandomSparse(20, 30, 3, 2, 1);
  EXPECT_TRUE(MustCreate(Config("logistic"))->Validate(sparse).ok());
  ModelConfig bounded = Config("logistic");
  bounded.num_features = 10;
  auto status = MustCreate(bounded)->Validate(sparse);
  EXPECT_THAT(std::string(status.message()), HasSubstr("exceeds model.num_features = 10"));

  sparse.labels[4] = 2;
  status = MustCreate(Config("fm"))->Validate(sparse);
  EXPECT_THAT(std::string(status.message()), HasSubstr("example 4: label 2 is not 0 or 1"));
  ModelConfig softmax = Config("softmax");
  softmax.num_classes = 3;
  EXPECT_TRUE(MustCreate(softmax)->Validate(sparse).ok());
  sparse.labels[5] = 1.5f;
  status = MustCreate(softmax)->Validate(sparse);
  EXPECT_THAT(std::string(status.message()), HasSubstr("example 5: label 1.5 is not an integer in [0, 3)"));

  ModelConfig mlp = Config("mlp");
  mlp.num_features = 8;
  mlp.num_classes = 3;
  status = MustCreate(mlp)->Validate(sparse);
  EXPECT_THAT(std::string(status.message()), HasSubstr("needs dense input"));
  data::Dataset dense = RandomDense(10, 8, 3, 2);
  EXPECT_TRUE(MustCreate(mlp)->Validate(dense).ok());
  mlp.num_features = 9;
  status = MustCreate(mlp)->Validate(dense);
  EXPECT_THAT(std::string(status.message()), HasSubstr("has 8 features per example but model.num_features = 9"));
  dense.dense[13] = NAN;
  status = MustCreate(softmax)->Validate(dense);
  EXPECT_THAT(std::string(status.message()), HasSubstr("example 1, column 5: value is not finite"));
}

// ---- Gradient checks ----

TEST_F(ModelTest, LogisticGradientSparse) {
  const data::Dataset d = RandomSparse(8, 12, 4, 2, 11);
  for (float l2 : {0.0f, 0.1f}) {
    ModelConfig c = Config("logistic");
    c.l2 = l2;
    auto model = MustCreate(c);
    std::vector<uint64_t> keys;
    model->Keys(All(d), &keys);
    CheckGradient(*model, All(d), keys, RandomParams(model->NumParams(keys.size()), 0.7f, 3), 2e-3, 2e-5);
  }
}

TEST_F(ModelTest, LogisticGradientDense) {
  const data::Dataset d = RandomDense(6, 5, 2, 12);
  auto model = MustCreate(Config("logistic"));
  std::vector<uint64_t> keys;
  model->Keys(All(d), &keys);
  ASSERT_EQ(keys.size(), 6u);
  CheckGradient(*model, All(d), keys, RandomParams(keys.size(), 0.7f, 4), 2e-3, 2e-5);
}

TEST_F(ModelTest, SoftmaxGradientSparseAndDense) {
  ModelConfig c = Config("softmax");
  c.num_classes = 4;
  c.l2 = 0.05f;
  auto model = MustCreate(c);
  std::vector<uint64_t> keys;
  const data::Dataset sparse = RandomSparse(8, 10, 3, 4, 13);
  model->Keys(All(sparse), &keys);
  CheckGradient(*model, All(sparse), keys, RandomParams(model->NumParams(keys.size()), 0.7f, 5), 2e-3, 2e-5);
  const data::Dataset dense = RandomDense(6, 7, 4, 14);
  model->Keys(All(dense), &keys);
  CheckGradient(*model, All(dense), keys, RandomParams(model->NumParams(keys.size()), 0.7f, 6), 2e-3, 2e-5);
}

TEST_F(ModelTest, FmGradientSparse) {
  for (float l2 : {0.0f, 0.1f}) {
    ModelConfig c = Config("fm");
    c.factor_dim = 3;
    c.l2 = l2;
    auto model = MustCreate(c);
    const data::Dataset d = RandomSparse(8, 10, 4, 2, 15);
    std::vector<uint64_t> keys;
    model->Keys(All(d), &keys);
    std::vector<float> params = RandomParams(model->NumParams(keys.size()), 0.5f, 7);
    CheckGradient(*model, All(d), keys, params, 2e-3, 2e-5);
    // The bias row's unused elements get gradient 0.
    std::vector<float> grads(params.size());
    model->Gradient(All(d), keys, params, absl::MakeSpan(grads));
    for (size_t j = params.size() - 3; j < params.size(); ++j) EXPECT_EQ(grads[j], 0.0f);
  }
}

TEST_F(ModelTest, FmGradientDense) {
  ModelConfig c = Config("fm");
  c.factor_dim = 2;
  auto model = MustCreate(c);
  const data::Dataset d = RandomDense(5, 4, 2, 16);
  std::vector<uint64_t> keys;
  model->Keys(All(d), &keys);
  CheckGradient(*model, All(d), keys, RandomParams(model->NumParams(keys.size()), 0.5f, 8), 2e-3, 2e-5);
}

TEST_F(ModelTest, MlpGradientDense) {
  for (float l2 : {0.0f, 0.1f}) {
    ModelConfig c = Config("mlp");
    c.num_features = 6;
    c.hidden = {5, 4};
    c.num_classes = 3;
    c.l2 = l2;
    auto model = MustCreate(c);
    const data::Dataset d = RandomDense(7, 6, 3, 17);
    // Biases random too, so every parameter is exercised.
    CheckGradient(*model, All(d), {}, RandomParams(model->NumParams(0), 0.6f, 9), 2e-2, 2e-4);
  }
}

TEST_F(ModelTest, MlpWithoutHiddenLayersIsSoftmaxRegression) {
  ModelConfig c = Config("mlp");
  c.num_features = 4;
  c.num_classes = 3;
  auto model = MustCreate(c);
  EXPECT_EQ(model->Table().size(), 15u);
  const data::Dataset d = RandomDense(6, 4, 3, 18);
  CheckGradient(*model, All(d), {}, RandomParams(15, 0.6f, 10), 2e-2, 2e-4);
}

TEST_F(ModelTest, SupersetKeysAndMissingKeys) {
  const data::Dataset d = RandomSparse(6, 8, 3, 2, 19);
  ModelConfig c = Config("fm");
  c.factor_dim = 2;
  auto model = MustCreate(c);
  std::vector<uint64_t> keys;
  model->Keys(All(d), &keys);
  const std::vector<float> params = RandomParams(model->NumParams(keys.size()), 0.5f, 11);
  std::vector<float> grads(params.size());
  const double loss = model->Gradient(All(d), keys, params, absl::MakeSpan(grads));

  // An extra key (1000, absent from the batch) gets zero gradient and changes nothing else.
  std::vector<uint64_t> more = keys;
  more.insert(more.end() - 1, 1000);
  std::vector<float> more_params = params;
  more_params.insert(more_params.end() - 3, {0.3f, 0.2f, 0.1f});
  std::vector<float> more_grads(more_params.size());
  EXPECT_DOUBLE_EQ(model->Gradient(All(d), more, more_params, absl::MakeSpan(more_grads)), loss);
  EXPECT_THAT(std::vector<float>(more_grads.end() - 6, more_grads.end() - 3), ElementsAre(0, 0, 0));

  // Without the bias key the bias is 0.
  std::vector<uint64_t> no_bias(keys.begin(), keys.end() - 1);
  std::vector<float> no_bias_params(params.begin(), params.end() - 3);
  std::vector<float> no_bias_grads(no_bias_params.size());
  const double loss2 = model->Gradient(All(d), no_bias, no_bias_params, absl::MakeSpan(no_bias_grads));
  EXPECT_TRUE(std::isfinite(loss2));
  EXPECT_NE(loss2, loss);
}

TEST_F(ModelTest, EmptyAndUnreadableBatches) {
  const data::Dataset sparse = RandomSparse(4, 8, 3, 2, 20);
  auto logistic = MustCreate(Config("logistic"));
  std::vector<uint64_t> keys;
  logistic->Keys(data::Batch{&sparse, 2, 2}, &keys);
  std::vector<float> params = {0.5f};
  std::vector<float> grads = {9.0f};
  EXPECT_EQ(logistic->Gradient(data::Batch{&sparse, 2, 2}, keys, params, absl::MakeSpan(grads)), 0.0);
  EXPECT_EQ(grads[0], 0.0f);

  ModelConfig c = Config("mlp");
  c.num_features = 8;
  c.num_classes = 2;
  auto mlp = MustCreate(c);
  params = RandomParams(mlp->NumParams(0), 0.5f, 1);
  grads.assign(params.size(), 1.0f);
  EXPECT_TRUE(std::isnan(mlp->Gradient(All(sparse), {}, params, absl::MakeSpan(grads))));
  EXPECT_TRUE(std::all_of(grads.begin(), grads.end(), [](float g) { return g == 0.0f; }));
  std::vector<float> out;
  mlp->Predict(All(sparse), {}, params, &out);
  ASSERT_EQ(out.size(), 8u);
  EXPECT_TRUE(std::isnan(out[0]));
}

// Predict() agrees with Gradient(): the logloss of the predictions is the loss.
TEST_F(ModelTest, PredictMatchesLoss) {
  struct Case {
    ModelConfig config;
    data::Dataset data;
  };
  std::vector<Case> cases;
  cases.push_back({Config("logistic"), RandomSparse(16, 20, 4, 2, 21)});
  ModelConfig c = Config("softmax");
  c.num_classes = 5;
  cases.push_back({c, RandomSparse(16, 20, 4, 5, 22)});
  cases.push_back({Config("fm"), RandomSparse(16, 20, 4, 2, 23)});
  c = Config("mlp");
  c.num_features = 9;
  c.hidden = {7};
  c.num_classes = 4;
  cases.push_back({c, RandomDense(16, 9, 4, 24)});
  for (const Case& t : cases) {
    auto model = MustCreate(t.config);
    std::vector<uint64_t> keys;
    model->Keys(All(t.data), &keys);
    const std::vector<float> params = RandomParams(model->NumParams(keys.size()), 0.3f, 25);
    std::vector<float> grads(params.size());
    const double loss = model->Gradient(All(t.data), keys, params, absl::MakeSpan(grads));
    std::vector<float> out;
    model->Predict(All(t.data), keys, params, &out);
    ASSERT_EQ(out.size(), t.data.size() * model->num_outputs());
    EvalAccumulator acc;
    acc.Add(out, t.data.labels, model->num_outputs());
    EXPECT_NEAR(acc.logloss(), loss, 1e-5 * loss) << t.config.type;
    if (model->num_outputs() > 1) {
      for (size_t i = 0; i < t.data.size(); ++i) {
        double sum = 0;
        for (int k = 0; k < model->num_outputs(); ++k) sum += out[i * model->num_outputs() + k];
        EXPECT_NEAR(sum, 1.0, 1e-5);
      }
    }
  }
}

// Gradient() from several threads at once gives what it gives on one thread.
TEST_F(ModelTest, ConcurrentGradientsMatchSequential) {
  ModelConfig fm = Config("fm");
  ModelConfig mlp = Config("mlp");
  mlp.num_features = 20;
  mlp.hidden = {16, 8};
  mlp.num_classes = 3;
  const data::Dataset sparse = RandomSparse(256, 50, 5, 2, 26);
  const data::Dataset dense = RandomDense(256, 20, 3, 27);
  for (const auto& [config, d] : {std::make_pair(fm, &sparse), std::make_pair(mlp, &dense)}) {
    auto model = MustCreate(config);
    constexpr int kBatches = 8;
    std::vector<std::vector<uint64_t>> keys(kBatches);
    std::vector<std::vector<float>> params(kBatches), expected(kBatches);
    std::vector<double> expected_loss(kBatches);
    for (int b = 0; b < kBatches; ++b) {
      const data::Batch batch{d, b * 32u, b * 32u + 32};
      model->Keys(batch, &keys[b]);
      params[b] = RandomParams(model->NumParams(keys[b].size()), 0.3f, b);
      expected[b].resize(params[b].size());
      expected_loss[b] = model->Gradient(batch, keys[b], params[b], absl::MakeSpan(expected[b]));
    }
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::vector<float> grads;
        for (int rep = 0; rep < 20; ++rep) {
          const int b = (t + rep) % kBatches;
          grads.assign(params[b].size(), 0.0f);
          const double loss =
              model->Gradient(data::Batch{d, b * 32u, b * 32u + 32}, keys[b], params[b], absl::MakeSpan(grads));
          if (loss != expected_loss[b] || grads != expected[b]) ++mismatches[t];
        }
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0)) << config.type;
  }
}

// ---- Training ----

// Separable sparse binary data: label = [w . x > 0] for hidden weights w.
data::Dataset SeparableSparse(size_t n, uint64_t num_features, int nnz, int classes, uint32_t seed) {
  data::Dataset d = RandomSparse(n, num_features, nnz, 2, seed);
  std::mt19937 rng(seed + 1);
  std::normal_distribution<float> normal;
  std::vector<std::vector<float>> w(classes, std::vector<float>(num_features + 1));
  for (auto& row : w) {
    for (float& v : row) v = normal(rng);
  }
  for (size_t i = 0; i < n; ++i) {
    std::vector<double> score(classes, 0.0);
    for (uint64_t j = d.offsets[i]; j < d.offsets[i + 1]; ++j) {
      for (int k = 0; k < classes; ++k) score[k] += w[k][d.ids[j]] * d.values[j];
    }
    if (classes == 2) {
      d.labels[i] = score[1] > 0 ? 1.0f : 0.0f;
    } else {
      d.labels[i] = static_cast<float>(std::max_element(score.begin(), score.end()) - score.begin());
    }
  }
  return d;
}

TEST_F(ModelTest, LogisticLearnsSeparableData) {
  const data::Dataset d = SeparableSparse(512, 40, 6, 2, 30);
  auto model = MustCreate(Config("logistic"));
  ASSERT_TRUE(model->Validate(d).ok());
  Store store(model->Table());
  const auto [first, last] = Train(*model, d, &store, 200, 32, 1.0f);
  EXPECT_LT(last, 0.5 * first);
  const EvalAccumulator eval = Evaluate(*model, d, &store);
  EXPECT_GT(eval.accuracy(), 0.9);
  EXPECT_GT(eval.auc(), 0.95);
}

TEST_F(ModelTest, SoftmaxLearnsSparseAndDenseData) {
  ModelConfig c = Config("softmax");
  c.num_classes = 3;
  auto model = MustCreate(c);
  const data::Dataset sparse = SeparableSparse(512, 40, 6, 3, 31);
  Store store(model->Table());
  auto [first, last] = Train(*model, sparse, &store, 200, 32, 1.0f);
  EXPECT_LT(last, 0.5 * first);
  EXPECT_GT(Evaluate(*model, sparse, &store).accuracy(), 0.9);

  // Gaussian blobs in 10 dense dimensions.
  data::Dataset dense = RandomDense(480, 10, 3, 32);
  std::mt19937 rng(33);
  std::normal_distribution<float> normal;
  std::vector<float> centers(30);
  for (float& v : centers) v = 1.5f * normal(rng);
  for (size_t i = 0; i < dense.size(); ++i) {
    const int y = static_cast<int>(dense.labels[i]);
    for (int j = 0; j < 10; ++j) dense.dense[i * 10 + j] = centers[y * 10 + j] + 0.5f * normal(rng);
  }
  ASSERT_TRUE(model->Validate(dense).ok());
  Store dense_store(model->Table());
  std::tie(first, last) = Train(*model, dense, &dense_store, 200, 32, 0.5f);
  EXPECT_LT(last, 0.5 * first);
  EXPECT_GT(Evaluate(*model, dense, &dense_store).accuracy(), 0.9);
}

// Each example pairs one feature of field A (ids 1..10) with one of field B (11..20); the label is
// an XOR of hidden signs of the two, which no linear model fits but a rank-1 interaction does.
TEST_F(ModelTest, FmLearnsInteractions) {
  std::mt19937 rng(34);
  std::vector<int> sign(21);
  for (int& s : sign) s = rng() % 2 ? 1 : -1;
  data::Dataset d;
  d.num_features = 21;
  d.offsets.push_back(0);
  for (int i = 0; i < 512; ++i) {
    const uint64_t a = 1 + rng() % 10;
    const uint64_t b = 11 + rng() % 10;
    d.ids.insert(d.ids.end(), {a, b});
    d.values.insert(d.values.end(), {1.0f, 1.0f});
    d.offsets.push_back(d.ids.size());
    d.labels.push_back(sign[a] * sign[b] > 0 ? 1.0f : 0.0f);
  }
  ModelConfig c = Config("fm");
  c.factor_dim = 4;
  auto model = MustCreate(c);
  ASSERT_TRUE(model->Validate(d).ok());
  Store store(model->Table());
  const auto [first, last] = Train(*model, d, &store, 200, 32, 2.0f);
  EXPECT_LT(last, 0.5 * first);
  EXPECT_GT(Evaluate(*model, d, &store).accuracy(), 0.9);

  auto logistic = MustCreate(Config("logistic"));
  Store logistic_store(logistic->Table());
  Train(*logistic, d, &logistic_store, 200, 32, 1.0f);
  EXPECT_LT(Evaluate(*logistic, d, &logistic_store).accuracy(), 0.8);
}

// XOR of the signs of two inputs (plus two noise inputs): needs the hidden layers.
TEST_F(ModelTest, MlpLearnsXor) {
  data::Dataset d = RandomDense(512, 4, 2, 35);
  for (size_t i = 0; i < d.size(); ++i) d.labels[i] = d.dense[i * 4] * d.dense[i * 4 + 1] > 0 ? 1.0f : 0.0f;
  ModelConfig c = Config("mlp");
  c.num_features = 4;
  c.hidden = {32, 16};
  c.num_classes = 2;
  auto model = MustCreate(c);
  ASSERT_TRUE(model->Validate(d).ok());
  Store store(model->Table());
  const auto [first, last] = Train(*model, d, &store, 200, 32, 0.5f);
  EXPECT_LT(last, 0.5 * first);
  const EvalAccumulator eval = Evaluate(*model, d, &store);
  EXPECT_GT(eval.accuracy(), 0.9);
  EXPECT_GT(eval.auc(), 0.95);  // two outputs: binary, scored by P(class 1)
}

// Not a timed test: prints the figure the worker cares about.
TEST_F(ModelTest, MlpMnistShapedBatchTiming) {
  ModelConfig c = Config("mlp");
  c.num_features = 784;
  c.hidden = {256, 128};
  c.num_classes = 10;
  auto model = MustCreate(c);
  const data::Dataset d = RandomDense(128, 784, 10, 36);
  Store store(model->Table());
  const std::vector<float> params = store.Pull({});
  std::vector<float> grads(params.size());
  model->Gradient(All(d), {}, params, absl::MakeSpan(grads));  // warm-up
  constexpr int kReps = 20;
  const auto start = std::chrono::steady_clock::now();
  double loss = 0;
  for (int r = 0; r < kReps; ++r) loss += model->Gradient(All(d), {}, params, absl::MakeSpan(grads));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("mlp 128 x 784 -> 256 -> 128 -> 10: %.2f ms per batch (forward + backward, 1 thread, OpenBLAS %s)\n",
              ms / kReps, BlasCoreName().c_str());
  const std::string warning = BlasCoreWarning();
  if (!warning.empty()) std::printf("%s\n", warning.c_str());
  EXPECT_NEAR(loss / kReps, std::log(10.0), 1.0);  // near-uniform predictions at initialization
}

}  // namespace
}  // namespace tessera::worker
