#include "worker/data_cache.h"

#include <numeric>

#include "common/data/idx.h"
#include "common/data/libsvm.h"
#include "common/hash.h"

namespace tessera::worker {
namespace {
uint64_t BytesOf(const data::Dataset& d) {
  return d.labels.size() * 4 + d.offsets.size() * 8 + d.ids.size() * 8 + d.values.size() * 4 + d.dense.size() * 4;
}
}  // namespace

DataCache::DataCache(std::string format, uint64_t num_features, int num_classes, uint64_t max_bytes)
    : format_(std::move(format)), num_features_(num_features), num_classes_(num_classes), max_bytes_(max_bytes) {}

absl::StatusOr<ChunkData> DataCache::Load(const tessera::v1::Chunk& chunk) {
  // IDX: decode the whole file pair once; libsvm: one entry per chunk.
  const bool idx = format_ == "idx";
  const auto key = idx ? std::make_tuple(chunk.path(), chunk.labels_path(), uint64_t{0}, uint64_t{0})
                       : std::make_tuple(chunk.path(), std::string(), chunk.begin(), chunk.end());
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      if (idx) return ChunkData{it->second, std::min<size_t>(chunk.begin(), it->second->size()),
                                std::min<size_t>(chunk.end(), it->second->size())};
      return ChunkData{it->second, 0, it->second->size()};
    }
  }
  absl::StatusOr<data::Dataset> loaded;
  if (idx) {
    loaded = data::ReadIdx(chunk.path(), chunk.labels_path());
  } else {
    data::LibsvmOptions opts;
    opts.num_features = num_features_;
    opts.num_classes = num_classes_;
    loaded = data::ReadLibsvm(chunk.path(), opts, chunk.begin(), chunk.end());
  }
  if (!loaded.ok()) return loaded.status();
  auto shared = std::make_shared<const data::Dataset>(std::move(loaded).value());
  {
    absl::MutexLock lock(&mu_);
    const uint64_t bytes = BytesOf(*shared);
    if (bytes_ + bytes <= max_bytes_) {
      cache_.emplace(key, shared);
      bytes_ += bytes;
    }
  }
  if (idx) return ChunkData{shared, std::min<size_t>(chunk.begin(), shared->size()), std::min<size_t>(chunk.end(), shared->size())};
  return ChunkData{shared, 0, shared->size()};
}

data::Dataset ShuffledCopy(const data::Dataset& d, size_t begin, size_t end, uint64_t seed) {
  const size_t n = end - begin;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), begin);
  uint64_t state = seed;
  for (size_t i = n; i > 1; --i) {
    state = Mix64(state);
    std::swap(order[i - 1], order[state % i]);
  }
  data::Dataset out;
  out.num_features = d.num_features;
  out.labels.reserve(n);
  if (d.is_dense()) {
    const size_t w = d.num_features;
    out.dense.resize(n * w);
    for (size_t i = 0; i < n; ++i) {
      out.labels.push_back(d.labels[order[i]]);
      std::copy_n(d.dense.data() + order[i] * w, w, out.dense.data() + i * w);
    }
    return out;
  }
  out.offsets.reserve(n + 1);
  out.offsets.push_back(0);
  for (size_t i = 0; i < n; ++i) {
    const size_t e = order[i];
    out.labels.push_back(d.labels[e]);
    for (uint64_t k = d.offsets[e]; k < d.offsets[e + 1]; ++k) {
      out.ids.push_back(d.ids[k]);
      out.values.push_back(d.values[k]);
    }
    out.offsets.push_back(out.ids.size());
  }
  return out;
}

}  // namespace tessera::worker
