#include "server/dense_table.h"

#include <algorithm>
#include <cstring>

namespace tessera::server {

DenseTable::DenseTable(DenseRange range, const Optimizer* optimizer, const Initializer* initializer)
    : range_(range),
      optimizer_(optimizer),
      floats_per_element_(1 + optimizer->num_slots()),
      num_blocks_((range.size() + kBlockElements - 1) / kBlockElements),
      storage_(std::max<uint64_t>(1, num_blocks_ * kBlockElements * floats_per_element_ * sizeof(float))),
      blocks_(new Block[std::max<uint64_t>(1, num_blocks_)]) {
  for (uint64_t b = 0; b < num_blocks_; ++b) {
    const uint64_t first = b * kBlockElements;
    const uint64_t n = std::min(kBlockElements, range_.size() - first);
    float* data = BlockData(b);
    initializer->FillDense(range_.begin + first, data, n);
    optimizer_->InitSlots(data, data + kBlockElements, n, kBlockElements);
  }
}

DenseTable::~DenseTable() = default;

void DenseTable::Pull(uint64_t offset, uint64_t n, float* out, bool averaged) const {
  // Slot k of an element lives (k + 1) * kBlockElements floats after its weight.
  const uint64_t shift = averaged ? (1 + optimizer_->average_slot()) * kBlockElements : 0;
  uint64_t local = offset - range_.begin;
  const uint64_t end = local + n;
  while (local < end) {
    const uint64_t b = local / kBlockElements;
    const uint64_t in_block = local % kBlockElements;
    const uint64_t len = std::min(kBlockElements - in_block, end - local);
    {
      absl::ReaderMutexLock lock(&blocks_[b].mu);
      std::memcpy(out, BlockData(b) + shift + in_block, len * sizeof(float));
    }
    out += len;
    local += len;
  }
}

void DenseTable::Push(uint64_t offset, const float* grads, uint64_t n, float lr_scale) {
  uint64_t local = offset - range_.begin;
  const uint64_t end = local + n;
  while (local < end) {
    const uint64_t b = local / kBlockElements;
    const uint64_t in_block = local % kBlockElements;
    const uint64_t len = std::min(kBlockElements - in_block, end - local);
    {
      Block& block = blocks_[b];
      absl::MutexLock lock(&block.mu);
      float* w = BlockData(b) + in_block;
      optimizer_->Apply(w, w + kBlockElements, kBlockElements, grads, len, lr_scale, &block.step);
    }
    grads += len;
    local += len;
  }
}

size_t DenseTable::CopyAll(std::string* out) const {
  const size_t block_bytes = kBlockElements * floats_per_element_ * sizeof(float);
  const size_t start = out->size();
  out->resize(start + num_blocks_ * (sizeof(uint32_t) + block_bytes));
  char* dst = out->data() + start;
  for (uint64_t b = 0; b < num_blocks_; ++b) {
    absl::ReaderMutexLock lock(&blocks_[b].mu);
    std::memcpy(dst, &blocks_[b].step, sizeof(uint32_t));
    std::memcpy(dst + sizeof(uint32_t), BlockData(b), block_bytes);
    dst += sizeof(uint32_t) + block_bytes;
  }
  return out->size() - start;
}

bool DenseTable::LoadAll(absl::string_view data) {
  const size_t block_bytes = kBlockElements * floats_per_element_ * sizeof(float);
  if (data.size() != num_blocks_ * (sizeof(uint32_t) + block_bytes)) return false;
  const char* src = data.data();
  for (uint64_t b = 0; b < num_blocks_; ++b) {
    absl::MutexLock lock(&blocks_[b].mu);
    std::memcpy(&blocks_[b].step, src, sizeof(uint32_t));
    std::memcpy(BlockData(b), src + sizeof(uint32_t), block_bytes);
    src += sizeof(uint32_t) + block_bytes;
  }
  return true;
}

}  // namespace tessera::server
