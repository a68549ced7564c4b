// Deterministic initial values for weights never pushed before. A value is a pure function of
// (seed, key, element) for sparse rows and (seed, global index) for dense tensors, so every run and
// every sharding of a table starts from the same weights. Immutable; thread-safe.
#ifndef TESSERA_SERVER_INITIALIZER_H_
#define TESSERA_SERVER_INITIALIZER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "tessera/v1/table.pb.h"

namespace tessera::server {

class Initializer {
 public:
  enum class Type { kZeros, kConstant, kUniform, kNormal };

  // INVALID_ARGUMENT for an unknown type or a negative / non-finite scale.
  static absl::StatusOr<Initializer> Create(const tessera::v1::InitializerSpec& spec);

  // Element `j` of sparse row `key`.
  float Value(uint64_t key, uint32_t j) const;
  // Fills `n` weights of sparse row `key`.
  void FillRow(uint64_t key, float* w, uint32_t n) const;
  // Fills dense elements [begin, begin + n), following the spec's segments.
  void FillDense(uint64_t begin, float* w, uint64_t n) const;

 private:
  struct Segment {
    uint64_t end;
    Type type;
    float scale;
  };
  Initializer(Type type, float scale, uint64_t seed) : type_(type), scale_(scale), seed_(seed) {}
  static float FromBits(Type type, float scale, uint64_t bits);

  Type type_;
  float scale_;
  uint64_t seed_;
  std::vector<Segment> segments_;  // ascending ends
};

}  // namespace tessera::server

#endif  // TESSERA_SERVER_INITIALIZER_H_
