// Models a worker trains: logistic regression, softmax (multiclass logistic) regression, a
// factorization machine and a multilayer perceptron. A model is pure math over parameters held
// elsewhere: it names the one parameter-server table it needs, lists the sparse keys a mini-batch
// touches, and turns pulled parameter values into a mean loss, its gradient, or predictions. It
// never talks to a server and keeps no parameters itself.
//
// Per mini-batch a worker calls Keys() (sparse models), pulls those rows (or the whole dense
// tensor), calls Gradient() and pushes the gradient; the server applies the optimizer.
//
// Table layouts (keys are feature ids: libsvm indices as written for sparse input, starting at 1;
// the 0-based column index for dense input):
//   logistic  SPARSE, dim 1.       Row f = [w_f]; row kBiasKey = [b].
//             Initializer: zeros.
//   softmax   SPARSE, dim K.       Row f = [W_f,0 .. W_f,K-1], the class weights of feature f;
//             row kBiasKey = [b_0 .. b_K-1]. Initializer: zeros.
//   fm        SPARSE, dim 1 + k.   Row f = [w_f, v_f,1 .. v_f,k]; row kBiasKey = [w_0, unused..]
//             (the unused elements always get gradient 0). Initializer: normal, sigma 0.01, on
//             every element (the sparse initializer has one type per table).
//             y = w_0 + sum_i w_i x_i + 1/2 sum_f [(sum_i v_i,f x_i)^2 - sum_i v_i,f^2 x_i^2].
//   mlp       DENSE. Layer sizes n_0 = num_features, n_1.. = hidden, n_L = K; for l = 1..L the
//             tensor holds W_l (n_{l-1} x n_l, row-major: element [i][j] at i * n_l + j) and then
//             b_l (n_l), layer after layer:  W_1 b_1 W_2 b_2 ... W_L b_L.
//             Hidden layers are ReLU, the output is softmax. Initializer segments: He-uniform
//             U(-a, a), a = sqrt(6 / n_{l-1}), for hidden weight matrices; Glorot-uniform,
//             a = sqrt(6 / (n_{L-1} + n_L)), for the output matrix; zeros for biases.
// Every initializer takes its seed from ModelConfig::seed. Table() leaves the table name and the
// optimizer unset: the job chooses them.
//
// Keys: sparse input contributes every listed feature id of the batch; dense input contributes
// the columns that hold a non-zero value in at least one example of the batch (zero inputs add
// nothing to the loss and get no gradient, so rows of columns that are all zero are not pulled).
// Sparse models always add kBiasKey, which sorts last. Feature id kBiasKey itself is reserved.
//
// Losses: binary models minimize the mean logloss, computed from the logit z as
// log(1 + e^z) - y z (exact and overflow-free for every finite z); multiclass models minimize the
// mean cross-entropy through a max-shifted log-sum-exp. With l2 > 0 the loss adds
// (l2 / 2) * ||w||^2 over the pulled non-bias rows (sparse) or all weight matrices (mlp).
//
// Inputs: binary models (logistic, fm) want labels 0/1; softmax and mlp want 0..K-1. The mlp wants
// dense input of exactly num_features columns, scaled to a small range (e.g. pixels / 255).
// Validate() checks a dataset against these rules once, so the per-batch calls need not.
//
// Thread-safety: a Model is immutable after Create(). All methods are const and may be called
// concurrently from any number of threads (scratch space is per thread). The mlp calls OpenBLAS
// (cblas_sgemm); a process that trains on several threads should call UseSingleThreadedBlas()
// (blas.h) once at startup so OpenBLAS does not spawn its own threads on top, and log
// BlasCoreWarning(): on some CPUs OpenBLAS needs OPENBLAS_CORETYPE to use fast kernels.
// No method blocks on anything but computation.
#ifndef TESSERA_WORKER_MODEL_MODEL_H_
#define TESSERA_WORKER_MODEL_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/data/dataset.h"
#include "tessera/v1/job.pb.h"
#include "tessera/v1/table.pb.h"

namespace tessera::worker {

// Reserved key of the bias row in sparse tables. Sorts after every feature id.
inline constexpr uint64_t kBiasKey = ~uint64_t{0};

// Fields a model type does not use (e.g. hidden for logistic) are ignored.
struct ModelConfig {
  std::string type;             // "logistic" | "softmax" | "fm" | "mlp"
  uint64_t num_features = 0;    // input width; required for mlp. Sparse models: 0 = unbounded,
                                // otherwise feature ids (sparse) / columns (dense) must be <= it.
  uint32_t num_classes = 2;     // softmax / mlp: K >= 2; logistic / fm: must be 2
  uint32_t factor_dim = 8;      // fm: k, 1..65535
  std::vector<uint32_t> hidden; // mlp hidden layer widths, e.g. {256, 128}; may be empty
  uint64_t seed = 1;            // initializer seed
  float l2 = 0;                 // L2 penalty (l2 / 2) * ||w||^2 on the weights a batch touches
                                // (bias rows / bias vectors are never penalized); >= 0
};

// The ModelConfig of a job's ModelSpec (proto/tessera/v1/job.proto).
ModelConfig ModelConfigFromSpec(const tessera::v1::ModelSpec& spec);

class Model {
 public:
  // Checks `config` and builds the model. INVALID_ARGUMENT naming the offending field, e.g.
  // "model.type = 'svm' is unknown (expected logistic, softmax, fm or mlp)".
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelConfig& config);

  virtual ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // The one table this model needs (layouts and initializers: see the top of this file). The name
  // and optimizer are left unset.
  virtual tessera::v1::TableSpec Table() const = 0;

  // True for models over a SPARSE table (logistic, softmax, fm), false for DENSE (mlp).
  bool sparse() const { return sparse_; }
  const ModelConfig& config() const { return config_; }
  // Number of floats Gradient() reads from `params` and writes to `grads`: num_keys * dim for
  // sparse models, the table size for dense ones (num_keys is then ignored).
  size_t NumParams(size_t num_keys) const;

  // Checks that `data` suits this model: CSR / dense shape, feature ids within num_features and
  // not kBiasKey, finite values, labels 0/1 (binary) or integers in [0, K), dense input of width
  // num_features for the mlp. INVALID_ARGUMENT naming the first bad example otherwise.
  absl::Status Validate(const data::Dataset& data) const;

  // Sparse models: replaces `keys` with the sorted, unique keys the batch needs (its features plus
  // kBiasKey). Dense models: clears `keys`.
  virtual void Keys(const data::Batch& batch, std::vector<uint64_t>* keys) const = 0;

  // Returns the mean loss over the batch (plus the L2 term, if any) and writes the gradient of
  // that value w.r.t. `params` to `grads`. `params` holds the pulled values: row r of `keys` at
  // [r * dim, (r + 1) * dim) for sparse models (keys as Keys() returned them, or any sorted
  // superset: rows no example uses get gradient 0, apart from L2); the whole tensor for dense
  // models (`keys` is ignored). `grads` has the size of `params` and is overwritten. Features
  // missing from `keys` count as zero weights. An empty batch returns 0 with zero gradients; a
  // batch the model cannot read (e.g. sparse input to the mlp) returns NaN with zero gradients.
  // Span sizes that disagree with NumParams() are a programming error and abort.
  virtual double Gradient(const data::Batch& batch, absl::Span<const uint64_t> keys,
                          absl::Span<const float> params, absl::Span<float> grads) const = 0;

  // Replaces `out` with batch.size() * num_outputs() values: P(y = 1) per example for binary
  // models, K class probabilities per example (example-major) for multiclass ones. Same
  // `keys` / `params` conventions as Gradient(); unreadable batches give NaN.
  virtual void Predict(const data::Batch& batch, absl::Span<const uint64_t> keys,
                       absl::Span<const float> params, std::vector<float>* out) const = 0;

  // 1 for binary models (logistic, fm), K for softmax and mlp.
  virtual int num_outputs() const = 0;

 protected:
  // `width`: the row dim of a sparse table, the size of a dense one.
  Model(const ModelConfig& config, bool sparse, uint64_t width)
      : config_(config), sparse_(sparse), width_(width) {}

 private:
  const ModelConfig config_;
  const bool sparse_;
  const uint64_t width_;
};

}  // namespace tessera::worker

#endif  // TESSERA_WORKER_MODEL_MODEL_H_
