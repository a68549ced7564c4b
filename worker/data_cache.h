// DataCache: loads the examples of a data lease (a chunk) and keeps decoded data in memory so later
// epochs do not parse again. IDX files are decoded once, whole, and chunks are views into them;
// libsvm chunks are parsed per chunk. The cache stops adding once `max_bytes` is held (then chunks
// are parsed each time). Thread-safe.
#ifndef TESSERA_WORKER_DATA_CACHE_H_
#define TESSERA_WORKER_DATA_CACHE_H_

#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/data/dataset.h"
#include "tessera/v1/coordinator.pb.h"

namespace tessera::worker {

struct ChunkData {
  std::shared_ptr<const data::Dataset> data;  // keeps the examples alive
  size_t begin = 0, end = 0;                  // examples of the chunk within *data
};

class DataCache {
 public:
  DataCache(std::string format, uint64_t num_features, int num_classes, uint64_t max_bytes = uint64_t{4} << 30);

  // The examples of `chunk`. Errors name the file and line of bad data.
  absl::StatusOr<ChunkData> Load(const tessera::v1::Chunk& chunk);

 private:
  const std::string format_;
  const uint64_t num_features_;
  const int num_classes_;
  const uint64_t max_bytes_;
  absl::Mutex mu_;
  std::map<std::tuple<std::string, std::string, uint64_t, uint64_t>, std::shared_ptr<const data::Dataset>> cache_
      ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// A copy of examples [begin, end) of `data` in a deterministic random order (seeded), so each
// epoch visits a chunk's examples differently.
data::Dataset ShuffledCopy(const data::Dataset& data, size_t begin, size_t end, uint64_t seed);

}  // namespace tessera::worker

#endif  // TESSERA_WORKER_DATA_CACHE_H_
