// Process-wide OpenBLAS settings for workers, which run the mlp's matrix products (cblas_sgemm)
// from several threads at once and want each call to stay on its calling thread.
//
// OpenBLAS chooses its kernels when the library loads, from the CPU it detects. Debian 12's
// OpenBLAS 0.3.21 does not know some recent Xeons and falls back to "Prescott" (SSE3) kernels,
// several times slower than the AVX2 / AVX-512 ones; the only remedy is the environment variable
// OPENBLAS_CORETYPE, set before the process starts. BlasCoreWarning() detects that case.
//
// Thread-safety: UseSingleThreadedBlas() changes process-wide state; call it once at startup
// before worker threads run. The other functions are thread-safe.
#ifndef TESSERA_WORKER_MODEL_BLAS_H_
#define TESSERA_WORKER_MODEL_BLAS_H_

#include <string>

namespace tessera::worker {

// Makes every OpenBLAS call run on its calling thread only (no OpenBLAS thread pool).
void UseSingleThreadedBlas();

// The kernel set OpenBLAS uses, e.g. "Haswell", "SkylakeX", "Prescott".
std::string BlasCoreName();

// The OPENBLAS_CORETYPE value that fits this CPU better than the kernels OpenBLAS chose, or empty.
std::string RecommendedBlasCoreType();
// Empty when OpenBLAS uses kernels that fit this CPU; otherwise a one-line warning naming the
// OPENBLAS_CORETYPE value to set before starting the process, e.g. "OpenBLAS runs Prescott kernels
// on a CPU with AVX-512; start the process with OPENBLAS_CORETYPE=SkylakeX (the mlp is several
// times faster)".
std::string BlasCoreWarning();

}  // namespace tessera::worker

#endif  // TESSERA_WORKER_MODEL_BLAS_H_
