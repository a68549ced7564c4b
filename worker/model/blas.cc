#include "worker/model/blas.h"

#include <cblas.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tessera::worker {

void UseSingleThreadedBlas() { openblas_set_num_threads(1); }

std::string BlasCoreName() {
  const char* name = openblas_get_corename();
  return name == nullptr ? std::string() : std::string(name);
}

std::string RecommendedBlasCoreType() {
#if defined(__x86_64__) && defined(__GNUC__)
  const std::string core = BlasCoreName();
  // Kernel sets that already use AVX2 or better.
  for (const char* good : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids", "Excavator"}) {
    if (absl::EqualsIgnoreCase(core, good)) return "";
  }
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!avx2) return "";
  return avx512 ? "SkylakeX" : "Haswell";
#else
  return "";
#endif
}

std::string BlasCoreWarning() {
  const std::string want = RecommendedBlasCoreType();
  if (want.empty()) return "";
  return absl::StrCat("OpenBLAS runs ", BlasCoreName(), " kernels on a CPU that supports ", want,
                      " ones; start the process with OPENBLAS_CORETYPE=", want, " (the mlp is several times faster)");
}

}  // namespace tessera::worker
