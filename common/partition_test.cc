#include "common/partition.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace tessera {
namespace {

std::vector<uint32_t> Ids(uint32_t n) {
  std::vector<uint32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  return ids;
}

std::vector<uint64_t> RandomKeys(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> keys(n);
  for (auto& k : keys) k = rng();
  return keys;
}

// Reference lookup: binary search on a ring rebuilt independently from the published rule.
uint32_t SlowOwner(const std::vector<uint32_t>& ids, uint32_t vnodes, uint64_t key) {
  std::vector<std::pair<uint64_t, uint32_t>> ring;
  for (uint32_t id : ids)
    for (uint32_t v = 0; v < vnodes; ++v) ring.push_back({HashCombine(0x7e55e7aULL + id, v), id});
  std::sort(ring.begin(), ring.end());
  const uint64_t h = Partitioner::KeyPoint(key);
  auto it = std::lower_bound(ring.begin(), ring.end(), std::make_pair(h, uint32_t{0}));
  return it == ring.end() ? ring.front().second : it->second;
}

TEST(PartitionerTest, FastLookupMatchesBinarySearchOnTheRing) {
  const std::vector<uint32_t> ids = {3, 7, 11};
  Partitioner p(ids, 64);
  for (uint64_t key : RandomKeys(2000, 1)) {
    ASSERT_EQ(p.ShardIdForKey(key), SlowOwner(ids, 64, key)) << "key " << key;
  }
}

TEST(PartitionerTest, SequentialKeysAreSpreadToo) {
  Partitioner p(Ids(4));
  std::vector<size_t> count(4);
  for (uint64_t k = 1; k <= 100000; ++k) ++count[p.ShardIndexForKey(k)];
  for (size_t c : count) EXPECT_NEAR(static_cast<double>(c), 25000.0, 25000.0 * 0.05);
}

TEST(PartitionerTest, LoadIsBalancedWithinFivePercentAtEightShards) {
  Partitioner p(Ids(8));
  const auto keys = RandomKeys(1000000, 42);
  std::vector<size_t> count(8);
  for (uint64_t k : keys) ++count[p.ShardIndexForKey(k)];
  const double mean = keys.size() / 8.0;
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_LE(std::abs(count[i] - mean) / mean, 0.05) << "shard " << i << " holds " << count[i];
  }
}

TEST(PartitionerTest, AddingAShardMovesAboutOneOverNPlusOne) {
  const auto keys = RandomKeys(1000000, 7);
  for (uint32_t n : {1u, 2u, 3u, 4u, 7u, 8u, 15u}) {
    Partitioner before(Ids(n)), after(Ids(n + 1));
    size_t moved = 0, to_new = 0;
    for (uint64_t k : keys) {
      const uint32_t a = before.ShardIdForKey(k), b = after.ShardIdForKey(k);
      if (a != b) {
        ++moved;
        to_new += b == n;
      }
    }
    const double frac = static_cast<double>(moved) / keys.size();
    EXPECT_LE(frac, 1.2 / (n + 1)) << n << " -> " << n + 1;
    EXPECT_GE(frac, 0.8 / (n + 1)) << n << " -> " << n + 1;
    EXPECT_EQ(moved, to_new) << "keys may only move to the new shard";
  }
}

TEST(PartitionerTest, RemovingAShardOnlyMovesItsKeys) {
  const auto keys = RandomKeys(200000, 9);
  Partitioner all(Ids(5)), without({0, 1, 3, 4});
  for (uint64_t k : keys) {
    const uint32_t a = all.ShardIdForKey(k);
    if (a != 2) {
      ASSERT_EQ(without.ShardIdForKey(k), a);
    }
  }
}

TEST(PartitionerTest, PlacementIsAFunctionOfTheShardSetOnly) {
  Partitioner a({5, 1, 9}), b({9, 5, 1, 1});
  for (uint64_t k : RandomKeys(10000, 3)) ASSERT_EQ(a.ShardIdForKey(k), b.ShardIdForKey(k));
  EXPECT_EQ(a.shard_ids(), (std::vector<uint32_t>{1, 5, 9}));
  EXPECT_EQ(a.IndexOf(9), 2);
  EXPECT_EQ(a.IndexOf(4), -1);
}

TEST(PartitionerTest, DenseRangesAreContiguousAndCoverTheTensor) {
  for (uint32_t n : {1u, 2u, 3u, 7u}) {
    Partitioner p(Ids(n));
    for (uint64_t size : {1ull, 5ull, 10ull, 1000003ull}) {
      uint64_t next = 0;
      for (uint32_t i = 0; i < n; ++i) {
        const DenseRange r = p.DenseRangeForIndex(size, i);
        EXPECT_EQ(r.begin, next);
        EXPECT_LE(r.size(), size / n + 1);
        EXPECT_GE(r.size(), size / n);
        for (uint64_t e : {r.begin, r.end - 1}) {
          if (r.size() > 0) {
            EXPECT_EQ(p.ShardIndexForElement(size, e), i) << size << " " << e;
          }
        }
        next = r.end;
      }
      EXPECT_EQ(next, size);
    }
  }
}

}  // namespace
}  // namespace tessera
