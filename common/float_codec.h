// Little-endian float32 <-> bytes, the value encoding of every Tessera message.
// On little-endian hosts (all supported ones) these are plain copies. Thread-safe, pure.
#ifndef TESSERA_COMMON_FLOAT_CODEC_H_
#define TESSERA_COMMON_FLOAT_CODEC_H_

#include <cstdint>
#include <cstring>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/base/config.h"
#include "absl/types/span.h"

namespace tessera {

#if !defined(ABSL_IS_LITTLE_ENDIAN)
#error "Tessera's wire codec assumes a little-endian host"
#endif

inline void AppendFloats(absl::Span<const float> values, std::string* out) {
  out->append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

inline std::string FloatsToBytes(absl::Span<const float> values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

// Copies the floats held in `bytes` to `out` (which must hold bytes.size() / 4 floats).
inline void BytesToFloats(absl::string_view bytes, float* out) { std::memcpy(out, bytes.data(), bytes.size()); }

// A view of the floats in `bytes` when it is suitably aligned, which std::string storage is.
inline absl::Span<const float> FloatView(absl::string_view bytes) {
  return absl::Span<const float>(reinterpret_cast<const float*>(bytes.data()), bytes.size() / sizeof(float));
}

// Index of the first NaN or +-Inf in `values`, or -1 when all are finite.
inline int64_t FirstNonFinite(absl::Span<const float> values) {
  const size_t n = values.size();
  const float* p = values.data();
  size_t i = 0;
  // Branch-free scan in blocks; the exact index is found only when a block has a bad value.
  for (; i + 16 <= n; i += 16) {
    uint32_t bad = 0;
    for (size_t j = 0; j < 16; ++j) {
      uint32_t bits;
      std::memcpy(&bits, p + i + j, 4);
      bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (bad) break;
  }
  for (; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + i, 4);
    if ((bits & 0x7f800000u) == 0x7f800000u) return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace tessera

#endif  // TESSERA_COMMON_FLOAT_CODEC_H_
