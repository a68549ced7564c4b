// Fast, stable 64-bit mixing used for placement, hash tables and deterministic initializers.
// Pure functions: the same inputs give the same outputs on every platform and run.
#ifndef TESSERA_COMMON_HASH_H_
#define TESSERA_COMMON_HASH_H_

#include <cstdint>

namespace tessera {

// SplitMix64 finalizer: a bijection on uint64 with full avalanche.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t HashCombine(uint64_t a, uint64_t b) { return Mix64(a ^ (Mix64(b) + 0x632be59bd9b4e019ULL)); }

// FNV-1a over bytes, then mixed; used for table names.
inline uint64_t HashBytes(const char* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 0x100000001b3ULL;
  }
  return Mix64(h);
}

// Maps 64 random bits to a float uniform in [0, 1).
inline float UnitFloat(uint64_t bits) { return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f); }

}  // namespace tessera

#endif  // TESSERA_COMMON_HASH_H_
