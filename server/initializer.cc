#include "server/initializer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace tessera::server {

namespace {
absl::StatusOr<Initializer::Type> ParseType(const std::string& name, float scale, absl::string_view field) {
  Initializer::Type type;
  if (name.empty() || name == "zeros") {
    type = Initializer::Type::kZeros;
  } else if (name == "constant") {
    type = Initializer::Type::kConstant;
  } else if (name == "uniform") {
    type = Initializer::Type::kUniform;
  } else if (name == "normal") {
    type = Initializer::Type::kNormal;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(field, ".type = '", name,
                                                   "' is unknown (expected zeros, constant, uniform or normal)"));
  }
  if (!std::isfinite(scale) || (type != Initializer::Type::kConstant && scale < 0)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".scale = ", scale, " is invalid"));
  }
  return type;
}
}  // namespace

absl::StatusOr<Initializer> Initializer::Create(const tessera::v1::InitializerSpec& spec) {
  auto type = ParseType(spec.type(), spec.scale(), "initializer");
  if (!type.ok()) return type.status();
  Initializer init(*type, spec.scale(), spec.seed());
  uint64_t prev = 0;
  for (int i = 0; i < spec.segments_size(); ++i) {
    const auto& seg = spec.segments(i);
    const std::string field = absl::StrCat("initializer.segments[", i, "]");
    auto t = ParseType(seg.type(), seg.scale(), field);
    if (!t.ok()) return t.status();
    if (seg.end() <= prev) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".end = ", seg.end(), " must exceed the previous end ", prev));
    }
    prev = seg.end();
    init.segments_.push_back({seg.end(), *t, seg.scale()});
  }
  return init;
}

float Initializer::FromBits(Type type, float scale, uint64_t bits) {
  switch (type) {
    case Type::kZeros:
      return 0.0f;
    case Type::kConstant:
      return scale;
    case Type::kUniform:
      return scale * (2.0f * UnitFloat(bits) - 1.0f);
    case Type::kNormal: {
      // Box-Muller on two independent 24-bit uniforms taken from one 64-bit draw; u1 is in (0, 1].
      const float u1 = (static_cast<float>(bits >> 40) + 1.0f) * (1.0f / 16777216.0f);
      const float u2 = static_cast<float>((bits >> 8) & 0xffffff) * (1.0f / 16777216.0f);
      return scale * std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
    }
  }
  return 0.0f;
}

float Initializer::Value(uint64_t key, uint32_t j) const {
  if (type_ == Type::kZeros) return 0.0f;
  return FromBits(type_, scale_, HashCombine(HashCombine(seed_, key), j));
}

void Initializer::FillRow(uint64_t key, float* w, uint32_t n) const {
  if (type_ == Type::kZeros) {
    for (uint32_t j = 0; j < n; ++j) w[j] = 0.0f;
    return;
  }
  const uint64_t base = HashCombine(seed_, key);
  for (uint32_t j = 0; j < n; ++j) w[j] = FromBits(type_, scale_, HashCombine(base, j));
}

void Initializer::FillDense(uint64_t begin, float* w, uint64_t n) const {
  size_t seg = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t g = begin + i;
    while (seg < segments_.size() && segments_[seg].end <= g) ++seg;
    const Type type = seg < segments_.size() ? segments_[seg].type : type_;
    const float scale = seg < segments_.size() ? segments_[seg].scale : scale_;
    w[i] = type == Type::kZeros ? 0.0f : FromBits(type, scale, HashCombine(seed_, g));
  }
}

}  // namespace tessera::server
