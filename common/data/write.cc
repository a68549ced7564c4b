#include "common/data/write.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tessera::data {

absl::Status WriteLibsvm(const Dataset& data, const std::string& path, int binary_positive) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
    std::string line;
    for (size_t i = 0; i < data.size(); ++i) {
      const int label = static_cast<int>(data.labels[i]);
      line = absl::StrCat(binary_positive >= 0 ? (label == binary_positive ? 1 : 0) : label);
      if (data.is_dense()) {
        const size_t w = data.num_features;
        for (size_t j = 0; j < w; ++j) {
          const float v = data.dense[i * w + j];
          if (v != 0.0f) absl::StrAppend(&line, " ", j + 1, ":", absl::StrFormat("%.4g", v));
        }
      } else {
        for (uint64_t k = data.offsets[i]; k < data.offsets[i + 1]; ++k) {
          if (data.values[k] != 0.0f) absl::StrAppend(&line, " ", data.ids[k], ":", absl::StrFormat("%.4g", data.values[k]));
        }
      }
      line += '\n';
      out << line;
    }
    if (!out.good()) return absl::InternalError(absl::StrCat("writing ", tmp, " failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return absl::InternalError(absl::StrCat("cannot rename to ", path));
  return absl::OkStatus();
}

}  // namespace tessera::data
