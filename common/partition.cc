#include "common/partition.h"

#include <algorithm>
#include <numeric>

namespace tessera {

Partitioner::Partitioner(std::vector<uint32_t> shard_ids, uint32_t virtual_nodes) {
  std::sort(shard_ids.begin(), shard_ids.end());
  shard_ids.erase(std::unique(shard_ids.begin(), shard_ids.end()), shard_ids.end());
  shard_ids_ = std::move(shard_ids);
  if (virtual_nodes == 0) virtual_nodes = kDefaultVirtualNodes;

  struct Point {
    uint64_t pos;
    uint32_t owner;
  };
  std::vector<Point> points;
  points.reserve(shard_ids_.size() * virtual_nodes);
  for (uint32_t idx = 0; idx < shard_ids_.size(); ++idx) {
    for (uint32_t v = 0; v < virtual_nodes; ++v) {
      points.push_back({HashCombine(0x7e55e7aULL + shard_ids_[idx], v), idx});
    }
  }
  // Ties (vanishingly rare) are broken by shard id so the ring is still a function of the map.
  std::sort(points.begin(), points.end(), [this](const Point& a, const Point& b) {
    return a.pos != b.pos ? a.pos < b.pos : shard_ids_[a.owner] < shard_ids_[b.owner];
  });
  ring_points_.reserve(points.size());
  ring_owner_.reserve(points.size());
  for (const Point& p : points) {
    ring_points_.push_back(p.pos);
    ring_owner_.push_back(p.owner);
  }
  buckets_.resize(size_t{1} << kBucketBits);
  size_t i = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const uint64_t start = static_cast<uint64_t>(b) << kBucketShift;
    while (i < ring_points_.size() && ring_points_[i] < start) ++i;
    buckets_[b] = static_cast<uint32_t>(i);
  }
  if (ring_points_.empty()) ring_owner_.push_back(0);  // keeps lookups in bounds; callers check
}

int Partitioner::IndexOf(uint32_t shard_id) const {
  auto it = std::lower_bound(shard_ids_.begin(), shard_ids_.end(), shard_id);
  if (it == shard_ids_.end() || *it != shard_id) return -1;
  return static_cast<int>(it - shard_ids_.begin());
}

DenseRange Partitioner::DenseRangeForIndex(uint64_t size, uint32_t index) const {
  const uint64_t n = shard_ids_.size();
  if (n == 0) return {};
  // Balanced split: the first (size % n) shards get one extra element.
  const uint64_t base = size / n, extra = size % n;
  const uint64_t begin = index * base + std::min<uint64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

uint32_t Partitioner::ShardIndexForElement(uint64_t size, uint64_t i) const {
  const uint64_t n = shard_ids_.size();
  const uint64_t base = size / n, extra = size % n;
  const uint64_t big = extra * (base + 1);  // elements held by the first `extra` shards
  if (i < big) return static_cast<uint32_t>(i / (base + 1));
  return static_cast<uint32_t>(extra + (i - big) / base);
}

}  // namespace tessera
