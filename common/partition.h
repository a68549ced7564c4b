// Placement of parameters on shards, a pure function of the shard map.
//
// Sparse keys: consistent hashing on a 64-bit ring with `virtual_nodes` points per shard, so adding
// a shard to N moves about 1/(N+1) of the keys and every shard gets close to 1/N of them. Lookups
// are O(1): a bucket table over the top bits of the ring points at the first ring point of each
// bucket, so finding a key's owner scans a point or two instead of a binary search.
//
// Dense tensors: split in contiguous ranges, one per shard, in ascending shard-id order.
//
// A Partitioner is immutable after construction; all methods are thread-safe.
#ifndef TESSERA_COMMON_PARTITION_H_
#define TESSERA_COMMON_PARTITION_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "common/hash.h"

namespace tessera {

inline constexpr uint32_t kDefaultVirtualNodes = 4096;

struct DenseRange {
  uint64_t begin = 0;
  uint64_t end = 0;  // exclusive
  uint64_t size() const { return end - begin; }
  bool operator==(const DenseRange& o) const { return begin == o.begin && end == o.end; }
};

class Partitioner {
 public:
  // `shard_ids` need not be sorted; duplicates are ignored. An empty list gives a partitioner that
  // owns nothing (num_shards() == 0).
  explicit Partitioner(std::vector<uint32_t> shard_ids, uint32_t virtual_nodes = kDefaultVirtualNodes);

  size_t num_shards() const { return shard_ids_.size(); }
  // Shard ids in ascending order; "shard index" below is a position in this list.
  const std::vector<uint32_t>& shard_ids() const { return shard_ids_; }
  // Position of `shard_id` in shard_ids(), or -1.
  int IndexOf(uint32_t shard_id) const;

  // Shard index owning sparse `key`. Requires num_shards() > 0.
  uint32_t ShardIndexForKey(uint64_t key) const {
    const uint64_t h = KeyPoint(key);
    uint32_t i = buckets_[h >> kBucketShift];
    const uint32_t n = static_cast<uint32_t>(ring_points_.size());
    while (i < n && ring_points_[i] < h) ++i;
    return ring_owner_[i == n ? 0 : i];
  }
  uint32_t ShardIdForKey(uint64_t key) const { return shard_ids_[ShardIndexForKey(key)]; }

  // Dense range of a tensor of `size` elements held by shard index `index`.
  DenseRange DenseRangeForIndex(uint64_t size, uint32_t index) const;
  // Shard index holding element `i` of a dense tensor of `size` elements.
  uint32_t ShardIndexForElement(uint64_t size, uint64_t i) const;

  // The ring position of a key; exposed for tests.
  static uint64_t KeyPoint(uint64_t key) { return Mix64(key ^ 0x5bd1e9955bd1e995ULL); }

 private:
  static constexpr int kBucketBits = 16;
  static constexpr int kBucketShift = 64 - kBucketBits;

  std::vector<uint32_t> shard_ids_;
  std::vector<uint64_t> ring_points_;  // sorted
  std::vector<uint32_t> ring_owner_;   // shard index of each ring point
  std::vector<uint32_t> buckets_;      // first ring point >= bucket start
};

}  // namespace tessera

#endif  // TESSERA_COMMON_PARTITION_H_
