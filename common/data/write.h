// Writing datasets as libsvm text, e.g. to turn the IDX images of Fashion-MNIST into a sparse
// libsvm file for the sparse models.
#ifndef TESSERA_COMMON_DATA_WRITE_H_
#define TESSERA_COMMON_DATA_WRITE_H_

#include <string>

#include "absl/status/status.h"
#include "common/data/dataset.h"

namespace tessera::data {

// Writes `data` as libsvm (features numbered from 1, zero values left out, values with 4
// significant digits). With `binary_positive` >= 0 the label becomes 1 for that class and 0
// otherwise. Written to a temporary file and renamed, so readers never see half a file.
absl::Status WriteLibsvm(const Dataset& data, const std::string& path, int binary_positive = -1);

}  // namespace tessera::data

#endif  // TESSERA_COMMON_DATA_WRITE_H_
