// SparseTable: uint64 key -> row of `dim` float weights plus the optimizer's slots, for one shard.
//
// Memory layout: the table is split in 64 stripes by key hash, each with its own lock, so pushes
// to different rows proceed in parallel. A stripe keeps its rows in fixed-size chunks of mmap'd
// memory, one row = [key u64][step u32, only for optimizers that count steps][dim weights][slots],
// and an open-addressing index of 32-bit row ids (linear probing, load <= 3/4). There is no per-row
// heap allocation; a dim-8 Adagrad row costs 72 bytes plus ~6 bytes of index. Rows are never moved
// or freed while the table lives.
//
// Thread-safety: all public methods are thread-safe. Pull takes stripe reader locks; Push takes
// stripe writer locks, one stripe at a time, never two at once.
#ifndef TESSERA_SERVER_SPARSE_TABLE_H_
#define TESSERA_SERVER_SPARSE_TABLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/mapped_buffer.h"
#include "server/initializer.h"
#include "server/optimizer.h"

namespace tessera::server {

class SparseTable {
 public:
  static constexpr int kStripeBits = 6;
  static constexpr int kNumStripes = 1 << kStripeBits;

  // `optimizer` and `initializer` must outlive the table.
  SparseTable(uint32_t dim, const Optimizer* optimizer, const Initializer* initializer, uint64_t salt);
  ~SparseTable();
  SparseTable(const SparseTable&) = delete;
  SparseTable& operator=(const SparseTable&) = delete;

  uint32_t dim() const { return dim_; }
  // Bytes of one stored row (key, step, weights, slots), the unit of checkpoint records.
  size_t row_bytes() const { return row_bytes_; }
  bool has_step() const { return has_step_; }

  // Copies the weights of `keys` (any order, duplicates allowed) into out[i * dim ..], or their
  // moving average when `averaged` (requires optimizer->average_slot() >= 0). Rows never pushed
  // read as their initial value and are not created. Non-blocking apart from stripe locks.
  void Pull(absl::Span<const uint64_t> keys, float* out, bool averaged = false) const;

  // Applies grads[i * dim ..] to row keys[i] with the optimizer, creating rows on first touch.
  // Keys must be unique within one call (callers validate); gradients must be finite.
  void Push(absl::Span<const uint64_t> keys, const float* grads, float lr_scale);

  uint64_t num_rows() const { return num_rows_.load(std::memory_order_relaxed); }
  // Bytes held by rows and index (what the table costs in resident memory).
  uint64_t memory_bytes() const;

  // Checkpoint support. CopyStripe appends the raw rows of stripe `s` to `out` under the stripe's
  // reader lock (a memory copy) and returns how many rows it copied. LoadRows inserts raw rows in
  // the same layout, replacing existing rows with the same key.
  size_t CopyStripe(int s, std::string* out) const;
  void LoadRows(const char* rows, size_t count);

 private:
  struct Stripe;

  uint64_t HashOf(uint64_t key) const;
  static int StripeOf(uint64_t h) { return static_cast<int>(h >> (64 - kStripeBits)); }
  // Row for (key, h) in `stripe`, created (initialized) when absent.
  char* FindOrInsert(Stripe& stripe, uint64_t key, uint64_t h) const;
  const char* Find(const Stripe& stripe, uint64_t key, uint64_t h) const;
  void Grow(Stripe& stripe) const;
  void ApplyRow(char* row, const float* grad, float lr_scale) const;
  // `skip` floats past the weights: 0 reads the weights, (1 + average slot) * dim the average.
  void ReadRow(const char* row, uint64_t key, size_t skip, float* out) const;
  // Prefetches the index slot of hash h (`ahead` = 1) or, once that is cached, the row (`ahead` = 2).
  void Prefetch(const Stripe& st, uint64_t h, bool row) const;

  const uint32_t dim_;
  const Optimizer* const optimizer_;
  const Initializer* const initializer_;
  const uint64_t salt_;
  const bool has_step_;
  const size_t weights_offset_;  // bytes from row start to the first weight
  const size_t row_bytes_;
  const int chunk_shift_;  // rows per chunk = 1 << chunk_shift_ (a shift, not a division, per lookup)
  const size_t chunk_rows_;
  std::unique_ptr<Stripe[]> stripes_;
  mutable std::atomic<uint64_t> num_rows_{0};
};

}  // namespace tessera::server

#endif  // TESSERA_SERVER_SPARSE_TABLE_H_
