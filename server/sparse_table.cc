#include "server/sparse_table.h"

#include <cstring>

#include "common/hash.h"

namespace tessera::server {

struct SparseTable::Stripe {
  mutable absl::Mutex mu;
  // Row storage: chunks of chunk_rows_ rows; row id r lives in chunks[r / chunk_rows_].
  std::vector<MappedBuffer> chunks ABSL_GUARDED_BY(mu);
  uint32_t size ABSL_GUARDED_BY(mu) = 0;
  // Index: slot value 0 = empty, otherwise row id + 1.
  MappedBuffer index ABSL_GUARDED_BY(mu);
  uint64_t mask ABSL_GUARDED_BY(mu) = 0;

  char* Row(uint32_t id, int shift, size_t row_bytes) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return chunks[id >> shift].data() + (id & ((uint32_t{1} << shift) - 1)) * row_bytes;
  }
};

namespace {
constexpr uint64_t kInitialSlots = 16;
size_t RoundUp8(size_t n) { return (n + 7) & ~size_t{7}; }
// log2 of the rows per chunk: the largest power of two whose chunk fits in 1 MiB (at least 64 rows).
int ChunkShift(size_t row_bytes) {
  int shift = 6;
  while ((size_t{2} << shift) * row_bytes <= (size_t{1} << 20)) ++shift;
  return shift;
}
uint64_t RowKey(const char* row) {
  uint64_t k;
  std::memcpy(&k, row, 8);
  return k;
}
// Per-thread scratch for grouping large requests by stripe, reused across calls.
struct Scratch {
  std::vector<uint64_t> hashes;
  std::vector<uint32_t> order;
};
thread_local Scratch tls_scratch;
}  // namespace

SparseTable::SparseTable(uint32_t dim, const Optimizer* optimizer, const Initializer* initializer,
                         uint64_t salt)
    : dim_(dim),
      optimizer_(optimizer),
      initializer_(initializer),
      salt_(salt),
      has_step_(optimizer->uses_step()),
      weights_offset_(has_step_ ? 12 : 8),
      row_bytes_(RoundUp8(weights_offset_ + sizeof(float) * dim * (1 + optimizer->num_slots()))),
      chunk_shift_(ChunkShift(row_bytes_)),
      chunk_rows_(size_t{1} << chunk_shift_),
      stripes_(new Stripe[kNumStripes]) {
  for (int s = 0; s < kNumStripes; ++s) {
    Stripe& st = stripes_[s];
    absl::MutexLock lock(&st.mu);
    st.index = MappedBuffer(kInitialSlots * sizeof(uint32_t));
    st.mask = kInitialSlots - 1;
  }
}

SparseTable::~SparseTable() = default;

uint64_t SparseTable::HashOf(uint64_t key) const { return Mix64(key ^ salt_); }

const char* SparseTable::Find(const Stripe& st, uint64_t key, uint64_t h) const
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  const uint32_t* slots = st.index.as<uint32_t>();
  for (uint64_t pos = h & st.mask;; pos = (pos + 1) & st.mask) {
    const uint32_t v = slots[pos];
    if (v == 0) return nullptr;
    const char* row = st.Row(v - 1, chunk_shift_, row_bytes_);
    if (RowKey(row) == key) return row;
  }
}

void SparseTable::Grow(Stripe& st) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  const uint64_t capacity = (st.mask + 1) * 2;
  MappedBuffer index(capacity * sizeof(uint32_t));
  uint32_t* slots = index.as<uint32_t>();
  const uint64_t mask = capacity - 1;
  for (uint32_t id = 0; id < st.size; ++id) {
    uint64_t pos = HashOf(RowKey(st.Row(id, chunk_shift_, row_bytes_))) & mask;
    while (slots[pos] != 0) pos = (pos + 1) & mask;
    slots[pos] = id + 1;
  }
  st.index = std::move(index);
  st.mask = mask;
}

char* SparseTable::FindOrInsert(Stripe& st, uint64_t key, uint64_t h) const
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  uint32_t* slots = st.index.as<uint32_t>();
  uint64_t pos = h & st.mask;
  for (;; pos = (pos + 1) & st.mask) {
    const uint32_t v = slots[pos];
    if (v == 0) break;
    char* row = st.Row(v - 1, chunk_shift_, row_bytes_);
    if (RowKey(row) == key) return row;
  }
  if ((st.size + 1) * 4 > (st.mask + 1) * 3) {
    Grow(st);
    slots = st.index.as<uint32_t>();
    for (pos = h & st.mask; slots[pos] != 0; pos = (pos + 1) & st.mask) {
    }
  }
  const uint32_t id = st.size;
  if (id / chunk_rows_ >= st.chunks.size()) st.chunks.emplace_back(chunk_rows_ * row_bytes_);
  char* row = st.Row(id, chunk_shift_, row_bytes_);
  std::memcpy(row, &key, 8);
  if (has_step_) std::memset(row + 8, 0, 4);
  float* w = reinterpret_cast<float*>(row + weights_offset_);
  initializer_->FillRow(key, w, dim_);
  optimizer_->InitSlots(w, w + dim_, dim_, dim_);
  slots[pos] = id + 1;
  st.size = id + 1;
  num_rows_.fetch_add(1, std::memory_order_relaxed);
  return row;
}

void SparseTable::Prefetch(const Stripe& st, uint64_t h, bool row) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  const uint32_t* slot = st.index.as<uint32_t>() + (h & st.mask);
  if (!row) {
    __builtin_prefetch(slot);
    return;
  }
  const uint32_t v = *slot;
  if (v != 0) __builtin_prefetch(st.Row(v - 1, chunk_shift_, row_bytes_));
}

void SparseTable::ApplyRow(char* row, const float* grad, float lr_scale) const {
  float* w = reinterpret_cast<float*>(row + weights_offset_);
  uint32_t step_storage = 0;
  uint32_t* step = has_step_ ? reinterpret_cast<uint32_t*>(row + 8) : &step_storage;
  optimizer_->Apply(w, w + dim_, dim_, grad, dim_, lr_scale, step);
}

void SparseTable::ReadRow(const char* row, uint64_t key, size_t skip, float* out) const {
  if (row != nullptr) {
    std::memcpy(out, row + weights_offset_ + sizeof(float) * skip, sizeof(float) * dim_);
  } else {
    initializer_->FillRow(key, out, dim_);
  }
}

namespace {
// Groups request positions by stripe: order[] lists positions stripe by stripe, begin[s]..begin[s+1].
template <typename HashFn>
void GroupByStripe(absl::Span<const uint64_t> keys, HashFn hash, Scratch& sc,
                   uint32_t (&begin)[SparseTable::kNumStripes + 1]) {
  const size_t n = keys.size();
  sc.hashes.resize(n);
  sc.order.resize(n);
  uint32_t count[SparseTable::kNumStripes] = {};
  for (size_t i = 0; i < n; ++i) {
    const uint64_t h = hash(keys[i]);
    sc.hashes[i] = h;
    ++count[h >> (64 - SparseTable::kStripeBits)];
  }
  begin[0] = 0;
  for (int s = 0; s < SparseTable::kNumStripes; ++s) begin[s + 1] = begin[s] + count[s];
  uint32_t fill[SparseTable::kNumStripes];
  std::memcpy(fill, begin, sizeof(fill));
  for (size_t i = 0; i < n; ++i) sc.order[fill[sc.hashes[i] >> (64 - SparseTable::kStripeBits)]++] = i;
}
constexpr size_t kGroupThreshold = 32;
}  // namespace

void SparseTable::Pull(absl::Span<const uint64_t> keys, float* out, bool averaged) const {
  const size_t skip = averaged ? size_t{1 + static_cast<uint32_t>(optimizer_->average_slot())} * dim_ : 0;
  if (keys.size() < kGroupThreshold) {
    for (size_t i = 0; i < keys.size(); ++i) {
      const uint64_t h = HashOf(keys[i]);
      const Stripe& st = stripes_[StripeOf(h)];
      absl::ReaderMutexLock lock(&st.mu);
      ReadRow(Find(st, keys[i], h), keys[i], skip, out + i * dim_);
    }
    return;
  }
  Scratch& sc = tls_scratch;
  uint32_t begin[kNumStripes + 1];
  GroupByStripe(keys, [this](uint64_t k) { return HashOf(k); }, sc, begin);
  for (int s = 0; s < kNumStripes; ++s) {
    if (begin[s] == begin[s + 1]) continue;
    const Stripe& st = stripes_[s];
    absl::ReaderMutexLock lock(&st.mu);
    const uint32_t end = begin[s + 1];
    for (uint32_t j = begin[s]; j < end; ++j) {
      // Two-stage prefetch: the index slot 8 keys ahead, the row 4 keys ahead.
      if (j + 8 < end) Prefetch(st, sc.hashes[sc.order[j + 8]], false);
      if (j + 4 < end) Prefetch(st, sc.hashes[sc.order[j + 4]], true);
      const uint32_t i = sc.order[j];
      ReadRow(Find(st, keys[i], sc.hashes[i]), keys[i], skip, out + size_t{i} * dim_);
    }
  }
}

void SparseTable::Push(absl::Span<const uint64_t> keys, const float* grads, float lr_scale) {
  if (keys.size() < kGroupThreshold) {
    for (size_t i = 0; i < keys.size(); ++i) {
      const uint64_t h = HashOf(keys[i]);
      Stripe& st = stripes_[StripeOf(h)];
      absl::MutexLock lock(&st.mu);
      ApplyRow(FindOrInsert(st, keys[i], h), grads + i * dim_, lr_scale);
    }
    return;
  }
  Scratch& sc = tls_scratch;
  uint32_t begin[kNumStripes + 1];
  GroupByStripe(keys, [this](uint64_t k) { return HashOf(k); }, sc, begin);
  for (int s = 0; s < kNumStripes; ++s) {
    if (begin[s] == begin[s + 1]) continue;
    Stripe& st = stripes_[s];
    absl::MutexLock lock(&st.mu);
    const uint32_t end = begin[s + 1];
    for (uint32_t j = begin[s]; j < end; ++j) {
      if (j + 8 < end) Prefetch(st, sc.hashes[sc.order[j + 8]], false);
      if (j + 4 < end) {
        const uint32_t ahead = sc.order[j + 4];
        Prefetch(st, sc.hashes[ahead], true);
        __builtin_prefetch(grads + size_t{ahead} * dim_);
      }
      const uint32_t i = sc.order[j];
      ApplyRow(FindOrInsert(st, keys[i], sc.hashes[i]), grads + size_t{i} * dim_, lr_scale);
    }
  }
}

uint64_t SparseTable::memory_bytes() const {
  uint64_t total = 0;
  for (int s = 0; s < kNumStripes; ++s) {
    const Stripe& st = stripes_[s];
    absl::ReaderMutexLock lock(&st.mu);
    total += uint64_t{st.size} * row_bytes_ + st.index.size();
  }
  return total;
}

size_t SparseTable::CopyStripe(int s, std::string* out) const {
  const Stripe& st = stripes_[s];
  absl::ReaderMutexLock lock(&st.mu);
  const size_t start = out->size();
  out->resize(start + size_t{st.size} * row_bytes_);
  char* dst = out->data() + start;
  for (size_t c = 0; c < st.chunks.size(); ++c) {
    const size_t rows = std::min<size_t>(chunk_rows_, st.size - c * chunk_rows_);
    std::memcpy(dst, st.chunks[c].data(), rows * row_bytes_);
    dst += rows * row_bytes_;
  }
  return st.size;
}

void SparseTable::LoadRows(const char* rows, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const char* src = rows + i * row_bytes_;
    const uint64_t key = RowKey(src);
    const uint64_t h = HashOf(key);
    Stripe& st = stripes_[StripeOf(h)];
    absl::MutexLock lock(&st.mu);
    char* row = FindOrInsert(st, key, h);
    std::memcpy(row, src, row_bytes_);
  }
}

}  // namespace tessera::server
