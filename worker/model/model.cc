#include "worker/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/model/model_internal.h"

namespace tessera::worker {

namespace {

constexpr uint32_t kMaxSparseDim = 65536;
// An mlp's tensor must stay addressable by the server and by BLAS; 2^32 floats is 16 GiB.
constexpr uint64_t kMaxDenseSize = uint64_t{1} << 32;

bool IsBinaryType(const std::string& type) { return type == "logistic" || type == "fm"; }

absl::Status CheckConfig(const ModelConfig& c) {
  if (c.type != "logistic" && c.type != "softmax" && c.type != "fm" && c.type != "mlp") {
    return absl::InvalidArgumentError(
        absl::StrCat("model.type = '", c.type, "' is unknown (expected logistic, softmax, fm or mlp)"));
  }
  if (IsBinaryType(c.type)) {
    if (c.num_classes != 2) {
      return absl::InvalidArgumentError(absl::StrCat("model.num_classes = ", c.num_classes, " must be 2 for ", c.type,
                                                     " (use softmax or mlp for more classes)"));
    }
  } else {
    if (c.num_classes < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.num_classes = ", c.num_classes, " must be at least 2 for ", c.type));
    }
    if (c.type == "softmax" && c.num_classes > kMaxSparseDim) {
      return absl::InvalidArgumentError(absl::StrCat("model.num_classes = ", c.num_classes,
                                                     " exceeds the sparse row limit of ", kMaxSparseDim, " floats"));
    }
  }
  if (c.type == "fm" && (c.factor_dim < 1 || c.factor_dim > kMaxSparseDim - 1)) {
    return absl::InvalidArgumentError(absl::StrCat("model.factor_dim = ", c.factor_dim, " must be in [1, ",
                                                   kMaxSparseDim - 1, "] (rows hold 1 + factor_dim floats)"));
  }
  if (!std::isfinite(c.l2) || c.l2 < 0) {
    return absl::InvalidArgumentError(absl::StrCat("model.l2 = ", c.l2, " must be finite and >= 0"));
  }
  if (c.type == "mlp") {
    if (c.num_features == 0) {
      return absl::InvalidArgumentError("model.num_features = 0 is required for mlp (the input width)");
    }
    for (size_t i = 0; i < c.hidden.size(); ++i) {
      if (c.hidden[i] == 0) {
        return absl::InvalidArgumentError(absl::StrCat("model.hidden[", i, "] = 0 must be at least 1"));
      }
    }
    // Sizes are capped step by step so the sum cannot overflow.
    uint64_t total = 0;
    uint64_t in = c.num_features;
    std::vector<uint64_t> widths(c.hidden.begin(), c.hidden.end());
    widths.push_back(c.num_classes);
    for (uint64_t out : widths) {
      if (in > kMaxDenseSize || (in + 1) > (kMaxDenseSize - total) / out) {
        return absl::InvalidArgumentError(absl::StrCat("model: the mlp (num_features = ", c.num_features,
                                                       ", hidden, num_classes) has more than ", kMaxDenseSize,
                                                       " parameters"));
      }
      total += (in + 1) * out;
      in = out;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Create(const ModelConfig& config) {
  absl::Status status = CheckConfig(config);
  if (!status.ok()) return status;
  if (config.type == "logistic") return internal::NewLogistic(config);
  if (config.type == "softmax") return internal::NewSoftmax(config);
  if (config.type == "fm") return internal::NewFm(config);
  return internal::NewMlp(config);
}

Model::~Model() = default;

size_t Model::NumParams(size_t num_keys) const {
  return sparse_ ? static_cast<size_t>(num_keys * width_) : static_cast<size_t>(width_);
}

absl::Status Model::Validate(const data::Dataset& data) const {
  const size_t n = data.size();
  const uint64_t width = data.num_features;
  const bool binary = IsBinaryType(config_.type);
  if (data.is_dense()) {
    if (width == 0 || data.dense.size() / width != n || data.dense.size() % width != 0) {
      return absl::InvalidArgumentError(absl::StrCat("dataset: dense holds ", data.dense.size(), " values, not ", n,
                                                     " examples x num_features = ", width));
    }
    if (!data.offsets.empty() || !data.ids.empty()) {
      return absl::InvalidArgumentError("dataset: has both dense values and sparse offsets / ids");
    }
    if (config_.type == "mlp" && width != config_.num_features) {
      return absl::InvalidArgumentError(absl::StrCat("dataset: has ", width, " features per example but model.num_features = ",
                                                     config_.num_features));
    }
    if (config_.num_features != 0 && width > config_.num_features) {
      return absl::InvalidArgumentError(absl::StrCat("dataset: has ", width, " columns, more than model.num_features = ",
                                                     config_.num_features));
    }
    for (size_t i = 0; i < n; ++i) {
      for (uint64_t j = 0; j < width; ++j) {
        if (!std::isfinite(data.dense[i * width + j])) {
          return absl::InvalidArgumentError(absl::StrCat("dataset: example ", i, ", column ", j, ": value is not finite"));
        }
      }
    }
  } else {
    if (config_.type == "mlp") {
      return absl::InvalidArgumentError("dataset: model.type = 'mlp' needs dense input; the dataset is sparse");
    }
    if (n > 0 || !data.offsets.empty()) {
      if (data.offsets.size() != n + 1 || data.offsets[0] != 0 || data.offsets[n] != data.ids.size() ||
          data.ids.size() != data.values.size()) {
        return absl::InvalidArgumentError(absl::StrCat("dataset: CSR shape is inconsistent (", n, " examples, ",
                                                       data.offsets.size(), " offsets, ", data.ids.size(), " ids, ",
                                                       data.values.size(), " values)"));
      }
    }
    for (size_t i = 0; i < n; ++i) {
      if (data.offsets[i + 1] < data.offsets[i]) {
        return absl::InvalidArgumentError(absl::StrCat("dataset: example ", i, ": offsets decrease"));
      }
      for (uint64_t j = data.offsets[i]; j < data.offsets[i + 1]; ++j) {
        const uint64_t id = data.ids[j];
        if (id == kBiasKey) {
          return absl::InvalidArgumentError(
              absl::StrCat("dataset: example ", i, ": feature id ", id, " is reserved for the bias"));
        }
        if (config_.num_features != 0 && id > config_.num_features) {
          return absl::InvalidArgumentError(absl::StrCat("dataset: example ", i, ": feature id ", id,
                                                         " exceeds model.num_features = ", config_.num_features));
        }
        if (!std::isfinite(data.values[j])) {
          return absl::InvalidArgumentError(
              absl::StrCat("dataset: example ", i, ": value of feature ", id, " is not finite"));
        }
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const float y = data.labels[i];
    if (binary) {
      if (y != 0.0f && y != 1.0f) {
        return absl::InvalidArgumentError(
            absl::StrCat("dataset: example ", i, ": label ", y, " is not 0 or 1 (", config_.type, " is binary)"));
      }
    } else if (!(y >= 0.0f && y < static_cast<float>(config_.num_classes) && y == std::floor(y))) {
      return absl::InvalidArgumentError(absl::StrCat("dataset: example ", i, ": label ", y,
                                                     " is not an integer in [0, ", config_.num_classes, ")"));
    }
  }
  return absl::OkStatus();
}

namespace internal {

void CheckOrDie(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "tessera::worker model: check failed: %s\n", what);
  std::abort();
}

void CheckBatch(const data::Batch& batch) {
  CheckOrDie(batch.data != nullptr, "batch.data is null");
  CheckOrDie(batch.begin <= batch.end && batch.end <= batch.data->size(), "batch range exceeds its dataset");
}

namespace {
void CheckParams(const Model& model, const char* call, absl::Span<const uint64_t> keys, size_t params, size_t grads) {
  const size_t want = model.NumParams(keys.size());
  if (params == want && grads == want) return;
  const std::string what = absl::StrCat(model.config().type, ": ", call, " needs ", want, " floats of params",
                                        call[0] == 'G' ? " and grads" : "", " for ", keys.size(), " keys, got ",
                                        params, call[0] == 'G' ? absl::StrCat(" and ", grads) : "");
  CheckOrDie(false, what.c_str());
}
}  // namespace

void StartGradient(const Model& model, const data::Batch& batch, absl::Span<const uint64_t> keys,
                   absl::Span<const float> params, absl::Span<float> grads) {
  CheckBatch(batch);
  CheckParams(model, "Gradient()", keys, params.size(), grads.size());
  std::fill(grads.begin(), grads.end(), 0.0f);
}

void StartPredict(const Model& model, const data::Batch& batch, absl::Span<const uint64_t> keys,
                  absl::Span<const float> params) {
  CheckBatch(batch);
  CheckParams(model, "Predict()", keys, params.size(), params.size());
}

tessera::v1::TableSpec SparseModel::Table() const {
  tessera::v1::TableSpec spec;
  spec.set_kind(tessera::v1::TableSpec::SPARSE);
  spec.set_dim(dim_);
  spec.mutable_initializer()->set_type(init_type_);
  spec.mutable_initializer()->set_scale(init_scale_);
  spec.mutable_initializer()->set_seed(config().seed);
  return spec;
}

void SparseModel::Keys(const data::Batch& batch, std::vector<uint64_t>* keys) const {
  CheckBatch(batch);
  SparseKeys(batch, keys);
}

void SparseKeys(const data::Batch& batch, std::vector<uint64_t>* keys) {
  keys->clear();
  const data::Dataset& d = *batch.data;
  if (d.is_dense()) {
    const uint64_t width = d.num_features;
    std::vector<char> used(width, 0);
    for (size_t i = batch.begin; i < batch.end; ++i) {
      const float* x = d.dense.data() + i * width;
      for (uint64_t j = 0; j < width; ++j) used[j] |= (x[j] != 0.0f);
    }
    for (uint64_t j = 0; j < width; ++j) {
      if (used[j]) keys->push_back(j);
    }
    keys->push_back(kBiasKey);
    return;
  }
  if (batch.size() > 0) {
    keys->assign(d.ids.begin() + d.offsets[batch.begin], d.ids.begin() + d.offsets[batch.end]);
  }
  keys->push_back(kBiasKey);
  std::sort(keys->begin(), keys->end());
  keys->erase(std::unique(keys->begin(), keys->end()), keys->end());
}

void BatchRows::Build(const data::Batch& batch, absl::Span<const uint64_t> keys) {
  const data::Dataset& d = *batch.data;
  begin.clear();
  row.clear();
  value.clear();
  bias_row = (!keys.empty() && keys.back() == kBiasKey) ? static_cast<int64_t>(keys.size() - 1) : -1;
  begin.push_back(0);
  if (d.is_dense()) {
    const uint64_t width = d.num_features;
    size_t num_columns = 0;  // keys [0, num_columns) are columns of the input
    while (num_columns < keys.size() && keys[num_columns] < width) ++num_columns;
    for (size_t i = batch.begin; i < batch.end; ++i) {
      const float* x = d.dense.data() + i * width;
      for (size_t r = 0; r < num_columns; ++r) {
        const float v = x[keys[r]];
        if (v != 0.0f) {
          row.push_back(static_cast<uint32_t>(r));
          value.push_back(v);
        }
      }
      begin.push_back(row.size());
    }
    return;
  }
  for (size_t i = batch.begin; i < batch.end; ++i) {
    for (uint64_t j = d.offsets[i]; j < d.offsets[i + 1]; ++j) {
      const auto it = std::lower_bound(keys.begin(), keys.end(), d.ids[j]);
      if (it == keys.end() || *it != d.ids[j]) continue;
      row.push_back(static_cast<uint32_t>(it - keys.begin()));
      value.push_back(d.values[j]);
    }
    begin.push_back(row.size());
  }
}

double AddSparseL2(float l2, uint32_t dim, int64_t bias_row, absl::Span<const float> params,
                   absl::Span<float> grads) {
  if (l2 == 0.0f) return 0.0;
  double sum = 0;
  const size_t rows = params.size() / dim;
  for (size_t r = 0; r < rows; ++r) {
    if (static_cast<int64_t>(r) == bias_row) continue;
    for (size_t j = r * dim; j < (r + 1) * dim; ++j) {
      sum += static_cast<double>(params[j]) * params[j];
      grads[j] += l2 * params[j];
    }
  }
  return 0.5 * l2 * sum;
}

}  // namespace internal

ModelConfig ModelConfigFromSpec(const tessera::v1::ModelSpec& m) {
  ModelConfig c;
  c.type = m.type();
  c.num_features = m.num_features();
  c.num_classes = m.num_classes();
  c.factor_dim = m.factor_dim();
  c.hidden.assign(m.hidden().begin(), m.hidden().end());
  c.seed = m.seed();
  c.l2 = m.l2();
  return c;
}

}  // namespace tessera::worker
