// Dataset: training or test examples held in memory, the unit data readers produce and models
// consume. Sparse inputs (libsvm) are stored in compressed-sparse-row form; dense inputs (IDX
// images) as a row-major matrix. Labels are floats: 0/1 for binary tasks, 0..K-1 for K classes.
//
// A Dataset is a plain value; a Batch is a view of a contiguous range of examples. Neither is
// synchronized: share them read-only.
#ifndef TESSERA_COMMON_DATA_DATASET_H_
#define TESSERA_COMMON_DATA_DATASET_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tessera::data {

struct Dataset {
  // Dense: the row width. Sparse: the declared feature count (ids must be <= it), or the largest
  // id seen + 1 when none was declared.
  uint64_t num_features = 0;
  std::vector<float> labels;  // one per example

  // Sparse (CSR): example i has features ids[offsets[i] .. offsets[i+1]) with the same values.
  // Feature ids are the file's indices as written (libsvm indices start at 1).
  std::vector<uint64_t> offsets;  // size() + 1 entries, offsets[0] == 0; empty when dense
  std::vector<uint64_t> ids;
  std::vector<float> values;

  // Dense: size() * num_features values, row-major; empty when sparse.
  std::vector<float> dense;

  bool is_dense() const { return !dense.empty(); }
  size_t size() const { return labels.size(); }
};

// Examples [begin, end) of `data`.
struct Batch {
  const Dataset* data = nullptr;
  size_t begin = 0;
  size_t end = 0;
  size_t size() const { return end - begin; }
};

}  // namespace tessera::data

#endif  // TESSERA_COMMON_DATA_DATASET_H_
