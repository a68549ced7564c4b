#include "server/exactly_once.h"

#include <cstring>

namespace tessera::server {

bool ExactlyOnceFilter::Admit(uint64_t worker, uint64_t sequence) {
  absl::MutexLock lock(&mu_);
  Window& w = windows_[worker];
  if (sequence > w.high) {
    if (sequence - w.high >= kWindow) {
      w.seen.reset();
    } else {
      for (uint64_t s = w.high + 1; s < sequence; ++s) w.seen.reset(s % kWindow);
    }
    w.high = sequence;
    w.seen.set(sequence % kWindow);
    return true;
  }
  if (w.high - sequence >= kWindow) return false;  // too old to tell: treat as applied
  if (w.seen.test(sequence % kWindow)) return false;
  w.seen.set(sequence % kWindow);
  return true;
}

void ExactlyOnceFilter::Forget(uint64_t worker, uint64_t sequence) {
  absl::MutexLock lock(&mu_);
  auto it = windows_.find(worker);
  if (it == windows_.end()) return;
  Window& w = it->second;
  if (sequence <= w.high && w.high - sequence < kWindow) w.seen.reset(sequence % kWindow);
}

size_t ExactlyOnceFilter::num_workers() const {
  absl::MutexLock lock(&mu_);
  return windows_.size();
}

std::string ExactlyOnceFilter::Serialize() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  const uint64_t n = windows_.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  for (const auto& [worker, w] : windows_) {
    out.append(reinterpret_cast<const char*>(&worker), 8);
    out.append(reinterpret_cast<const char*>(&w.high), 8);
    // Only the sequences inside the window matter; store them as a bitmap of kWindow bits.
    std::string bits(kWindow / 8, '\0');
    for (uint64_t i = 0; i < kWindow; ++i) {
      if (w.seen.test(i)) bits[i / 8] = static_cast<char>(bits[i / 8] | (1 << (i % 8)));
    }
    out += bits;
  }
  return out;
}

bool ExactlyOnceFilter::Deserialize(absl::string_view data) {
  if (data.size() < 8) return false;
  uint64_t n;
  std::memcpy(&n, data.data(), 8);
  const size_t record = 16 + kWindow / 8;
  if (n > (data.size() - 8) / record || data.size() != 8 + n * record) return false;  // no overflow
  absl::flat_hash_map<uint64_t, Window> windows;
  const char* p = data.data() + 8;
  for (uint64_t r = 0; r < n; ++r, p += record) {
    uint64_t worker;
    Window w;
    std::memcpy(&worker, p, 8);
    std::memcpy(&w.high, p + 8, 8);
    for (uint64_t i = 0; i < kWindow; ++i) {
      if (p[16 + i / 8] & (1 << (i % 8))) w.seen.set(i);
    }
    windows[worker] = w;
  }
  absl::MutexLock lock(&mu_);
  windows_ = std::move(windows);
  return true;
}

}  // namespace tessera::server
