// CoordinatorLink: a tessera-server's membership in a cluster. It registers with the coordinator
// under the server's stable id (kept in --data_dir, so a restarted server gets its shard back),
// installs the shard map, creates the tables of running jobs — restoring each from the latest
// complete checkpoint, falling back to an older one if that is corrupt — and then heartbeats with
// the server's status, applying newer shard maps and registering again if the coordinator forgot
// it. While the coordinator is unreachable the server keeps serving and keeps trying.
//
// Thread-safety: Start() and the destructor are called from one thread; the heartbeat runs on its own.
#ifndef TESSERA_SERVER_COORDINATOR_LINK_H_
#define TESSERA_SERVER_COORDINATOR_LINK_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/security.h"
#include "server/shard_store.h"
#include "tessera/v1/coordinator.grpc.pb.h"

namespace tessera::server {

struct CoordinatorLinkOptions {
  std::string coordinator;        // host:port
  std::string advertise_address;  // where clients reach this server
  std::string server_id;
  std::string checkpoint_root;    // default checkpoint directory (<data_dir>/checkpoints)
  uint64_t capacity_bytes = 0;
  std::shared_ptr<const Security> security;
};

class CoordinatorLink {
 public:
  CoordinatorLink(CoordinatorLinkOptions options, ShardStore* store);
  ~CoordinatorLink();

  // Registers (retrying until `timeout`), installs the map and the assigned tables, then starts
  // the heartbeat. Blocks.
  absl::Status Start(absl::Duration timeout);
  uint32_t shard_id() const { return shard_id_.load(); }

 private:
  absl::Status Register();
  absl::Status InstallTables(const tessera::v1::RegisterServerResponse& resp);
  void HeartbeatLoop();

  const CoordinatorLinkOptions options_;
  ShardStore* const store_;
  std::unique_ptr<tessera::v1::CoordinatorService::Stub> stub_;
  std::atomic<uint32_t> shard_id_{0};
  std::atomic<int> interval_ms_{1000};
  absl::Notification stop_;
  std::thread thread_;
};

// The server's stable identity: read from <data_dir>/SERVER_ID, created on first start.
// Without a data_dir a fresh random id is returned.
absl::StatusOr<std::string> LoadOrCreateServerId(const std::string& data_dir);

}  // namespace tessera::server

#endif  // TESSERA_SERVER_COORDINATOR_LINK_H_
