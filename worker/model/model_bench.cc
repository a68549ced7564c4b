// Prints per-batch compute time of the models on MNIST- and Criteo-shaped random batches, on one
// thread (OpenBLAS limited to one thread). Usage: model_bench [repetitions]
// Prints the OpenBLAS kernel set and, when it is too old for the CPU, the OPENBLAS_CORETYPE to use.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>

#include "worker/model/blas.h"
#include "worker/model/model.h"

namespace {

using tessera::data::Batch;
using tessera::data::Dataset;
using tessera::worker::Model;
using tessera::worker::ModelConfig;

Dataset DenseBatch(size_t n, uint64_t width, int classes) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> value(0.0f, 1.0f);
  Dataset d;
  d.num_features = width;
  for (size_t i = 0; i < n * width; ++i) d.dense.push_back(value(rng) < 0.2f ? 0.0f : value(rng));
  for (size_t i = 0; i < n; ++i) d.labels.push_back(static_cast<float>(rng() % classes));
  return d;
}

Dataset SparseBatch(size_t n, int nnz) {
  std::mt19937_64 rng(2);
  Dataset d;
  d.offsets.push_back(0);
  for (size_t i = 0; i < n; ++i) {
    for (int j = 0; j < nnz; ++j) {
      d.ids.push_back(1 + rng() % 1000000);
      d.values.push_back(1.0f);
    }
    d.offsets.push_back(d.ids.size());
    d.labels.push_back(static_cast<float>(rng() % 2));
  }
  d.num_features = 1000001;
  return d;
}

double WallMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// This thread's CPU time: unlike wall time, not inflated when other processes share the cores.
double CpuMs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void Time(const char* name, const ModelConfig& config, const Dataset& d, int reps) {
  auto model = Model::Create(config);
  if (!model.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, model.status().ToString().c_str());
    std::exit(1);
  }
  const Batch batch{&d, 0, d.size()};
  std::vector<uint64_t> keys;
  (*model)->Keys(batch, &keys);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> params((*model)->NumParams(keys.size()));
  for (float& v : params) v = normal(rng);
  std::vector<float> grads(params.size());
  std::vector<float> out;
  (*model)->Gradient(batch, keys, params, absl::MakeSpan(grads));
  double wall = WallMs();
  double cpu = CpuMs();
  for (int r = 0; r < reps; ++r) (*model)->Gradient(batch, keys, params, absl::MakeSpan(grads));
  const double gradient_wall = (WallMs() - wall) / reps;
  const double gradient_cpu = (CpuMs() - cpu) / reps;
  wall = WallMs();
  cpu = CpuMs();
  for (int r = 0; r < reps; ++r) (*model)->Predict(batch, keys, params, &out);
  const double predict_wall = (WallMs() - wall) / reps;
  const double predict_cpu = (CpuMs() - cpu) / reps;
  std::printf("%-32s params %7zu  gradient %7.3f ms (cpu %7.3f)  predict %7.3f ms (cpu %7.3f)\n", name,
              params.size(), gradient_wall, gradient_cpu, predict_wall, predict_cpu);
}

}  // namespace

int main(int argc, char** argv) {
  tessera::worker::UseSingleThreadedBlas();
  const int reps = argc > 1 ? std::atoi(argv[1]) : 50;
  std::printf("OpenBLAS core: %s\n", tessera::worker::BlasCoreName().c_str());
  const std::string warning = tessera::worker::BlasCoreWarning();
  if (!warning.empty()) std::printf("warning: %s\n", warning.c_str());
  const Dataset mnist = DenseBatch(128, 784, 10);
  const Dataset criteo = SparseBatch(128, 39);

  ModelConfig mlp;
  mlp.type = "mlp";
  mlp.num_features = 784;
  mlp.hidden = {256, 128};
  mlp.num_classes = 10;
  Time("mlp 128 x 784-256-128-10", mlp, mnist, reps);

  ModelConfig softmax;
  softmax.type = "softmax";
  softmax.num_classes = 10;
  Time("softmax 128 x 784 dense, K=10", softmax, mnist, reps);

  ModelConfig logistic;
  logistic.type = "logistic";
  Time("logistic 128 x 39 sparse", logistic, criteo, reps);

  ModelConfig fm;
  fm.type = "fm";
  fm.factor_dim = 8;
  Time("fm 128 x 39 sparse, k=8", fm, criteo, reps);
  return 0;
}
