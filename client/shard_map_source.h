// Where a KvClient gets its shard map from: a fixed list of servers, or the coordinator.
#ifndef TESSERA_CLIENT_SHARD_MAP_SOURCE_H_
#define TESSERA_CLIENT_SHARD_MAP_SOURCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tessera/v1/table.pb.h"

namespace tessera::client {

class ShardMapSource {
 public:
  virtual ~ShardMapSource() = default;
  // The newest shard map this source knows. May block on an RPC; thread-safe.
  virtual absl::StatusOr<tessera::v1::ShardMap> Fetch() = 0;
};

// A fixed map: shard i is addresses[i]. With one address the version is 0, which servers treat as
// "no placement check" (a standalone server owns everything); with several it is 1 and the caller
// installs the same map on the servers (see KvClient::InstallShardMap).
std::unique_ptr<ShardMapSource> StaticShardMap(std::vector<std::string> addresses);

// The map for `addresses` that StaticShardMap serves.
tessera::v1::ShardMap MakeStaticShardMap(const std::vector<std::string>& addresses);

}  // namespace tessera::client

#endif  // TESSERA_CLIENT_SHARD_MAP_SOURCE_H_
