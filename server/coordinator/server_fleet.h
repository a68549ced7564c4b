// ServerFleet: the calls the coordinator makes to tessera-server shards (create and drop tables,
// install shard maps, checkpoints). An interface so coordinator tests can use an in-process fake;
// the real one speaks gRPC. Implementations are thread-safe; every call blocks until the server
// answers or its deadline passes, so callers must not hold locks or run on gRPC callback threads.
#ifndef TESSERA_SERVER_COORDINATOR_SERVER_FLEET_H_
#define TESSERA_SERVER_COORDINATOR_SERVER_FLEET_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/security.h"
#include "tessera/v1/parameter.pb.h"
#include "tessera/v1/table.pb.h"

namespace tessera::coordinator {

class ServerFleet {
 public:
  virtual ~ServerFleet() = default;
  virtual absl::Status CreateTable(const std::string& address, const tessera::v1::TableSpec& spec) = 0;
  virtual absl::Status DropTables(const std::string& address, const std::string& prefix) = 0;
  virtual absl::Status UpdateShardMap(const std::string& address, const tessera::v1::ShardMap& map,
                                      uint32_t shard_id) = 0;
  virtual absl::StatusOr<tessera::v1::SaveCheckpointResponse> SaveCheckpoint(
      const std::string& address, const tessera::v1::SaveCheckpointRequest& request) = 0;
  virtual absl::StatusOr<tessera::v1::LoadCheckpointResponse> LoadCheckpoint(
      const std::string& address, const tessera::v1::LoadCheckpointRequest& request) = 0;
};

// The gRPC fleet; channels are created per address on first use and reused.
std::unique_ptr<ServerFleet> NewGrpcServerFleet(absl::Duration rpc_timeout = absl::Seconds(30),
                                               std::shared_ptr<const Security> security = nullptr);

}  // namespace tessera::coordinator

#endif  // TESSERA_SERVER_COORDINATOR_SERVER_FLEET_H_
