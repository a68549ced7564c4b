// DenseTable: this shard's contiguous range [begin, end) of a float tensor, plus optimizer slots.
//
// The range is cut in blocks of kBlockElements; each block has its own lock and step counter and
// stores [weights][slot 0][slot 1]... back to back, so a push of a whole tensor and pushes of
// disjoint slices proceed block by block in parallel.
//
// Thread-safety: all public methods are thread-safe.
#ifndef TESSERA_SERVER_DENSE_TABLE_H_
#define TESSERA_SERVER_DENSE_TABLE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/mapped_buffer.h"
#include "common/partition.h"
#include "server/initializer.h"
#include "server/optimizer.h"

namespace tessera::server {

class DenseTable {
 public:
  static constexpr uint64_t kBlockElements = 16384;

  // `optimizer` and `initializer` must outlive the table. Weights start at their initial values.
  DenseTable(DenseRange range, const Optimizer* optimizer, const Initializer* initializer);
  ~DenseTable();
  DenseTable(const DenseTable&) = delete;
  DenseTable& operator=(const DenseTable&) = delete;

  const DenseRange& range() const { return range_; }

  // Copies global elements [offset, offset + n) into out, or their moving average when `averaged`
  // (requires optimizer->average_slot() >= 0). Requires the range to be inside range().
  void Pull(uint64_t offset, uint64_t n, float* out, bool averaged = false) const;
  // Applies grads to global elements [offset, offset + n). Requires the range inside range().
  void Push(uint64_t offset, const float* grads, uint64_t n, float lr_scale);

  uint64_t memory_bytes() const { return storage_.size(); }

  // Checkpoint support: copies every block (weights, slots and step) under its lock, appending to
  // `out` in the layout LoadBlocks() reads back; returns the bytes appended.
  size_t CopyAll(std::string* out) const;
  // Restores from the bytes of CopyAll() of a table with the same range and optimizer.
  bool LoadAll(absl::string_view data);

 private:
  struct Block {
    mutable absl::Mutex mu;
    uint32_t step = 0;
  };
  float* BlockData(uint64_t b) const {
    return storage_.as<float>() + b * kBlockElements * floats_per_element_;
  }

  const DenseRange range_;
  const Optimizer* const optimizer_;
  const uint64_t floats_per_element_;
  const uint64_t num_blocks_;
  MappedBuffer storage_;
  std::unique_ptr<Block[]> blocks_;
};

}  // namespace tessera::server

#endif  // TESSERA_SERVER_DENSE_TABLE_H_
