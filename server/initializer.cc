#include "server/initializer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace tessera::server {

absl::StatusOr<Initializer> Initializer::Create(const tessera::v1::InitializerSpec& spec) {
  Type type;
  if (spec.type().empty() || spec.type() == "zeros") {
    type = Type::kZeros;
  } else if (spec.type() == "constant") {
    type = Type::kConstant;
  } else if (spec.type() == "uniform") {
    type = Type::kUniform;
  } else if (spec.type() == "normal") {
    type = Type::kNormal;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "initializer.type = '", spec.type(), "' is unknown (expected zeros, constant, uniform or normal)"));
  }
  if (!std::isfinite(spec.scale()) || (type != Type::kConstant && spec.scale() < 0)) {
    return absl::InvalidArgumentError(absl::StrCat("initializer.scale = ", spec.scale(), " is invalid"));
  }
  return Initializer(type, spec.scale(), spec.seed());
}

float Initializer::FromBits(uint64_t bits) const {
  switch (type_) {
    case Type::kZeros:
      return 0.0f;
    case Type::kConstant:
      return scale_;
    case Type::kUniform:
      return scale_ * (2.0f * UnitFloat(bits) - 1.0f);
    case Type::kNormal: {
      // Box-Muller on two independent 24-bit uniforms taken from one 64-bit draw; u1 is in (0, 1].
      const float u1 = (static_cast<float>(bits >> 40) + 1.0f) * (1.0f / 16777216.0f);
      const float u2 = static_cast<float>((bits >> 8) & 0xffffff) * (1.0f / 16777216.0f);
      return scale_ * std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
    }
  }
  return 0.0f;
}

float Initializer::Value(uint64_t key, uint32_t j) const {
  if (type_ == Type::kZeros) return 0.0f;
  return FromBits(HashCombine(HashCombine(seed_, key), j));
}

void Initializer::FillRow(uint64_t key, float* w, uint32_t n) const {
  if (type_ == Type::kZeros) {
    for (uint32_t j = 0; j < n; ++j) w[j] = 0.0f;
    return;
  }
  const uint64_t base = HashCombine(seed_, key);
  for (uint32_t j = 0; j < n; ++j) w[j] = FromBits(HashCombine(base, j));
}

void Initializer::FillDense(uint64_t begin, float* w, uint64_t n) const {
  if (type_ == Type::kZeros) {
    for (uint64_t i = 0; i < n; ++i) w[i] = 0.0f;
    return;
  }
  for (uint64_t i = 0; i < n; ++i) w[i] = FromBits(HashCombine(seed_, begin + i));
}

}  // namespace tessera::server
