// The coordinator's durable state: one snapshot file, written atomically (temporary file, fsync,
// rename, fsync of the directory) and checked with CRC32C when read back.
//
// Layout: "TSRCOORD" (8 bytes) | format version u32 | CRC32C of payload u32 | payload length u64 |
// payload (CoordinatorState, protobuf). All integers little-endian.
#ifndef TESSERA_SERVER_COORDINATOR_STATE_FILE_H_
#define TESSERA_SERVER_COORDINATOR_STATE_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "tessera/v1/coordinator.pb.h"

namespace tessera::coordinator {

std::string StateFilePath(const std::string& state_dir);
// NOT_FOUND when there is no file; DATA_LOSS naming the file when it is truncated or corrupt.
absl::StatusOr<tessera::v1::CoordinatorState> ReadStateFile(const std::string& path);
absl::Status WriteStateFile(const std::string& path, const tessera::v1::CoordinatorState& state);

}  // namespace tessera::coordinator

#endif  // TESSERA_SERVER_COORDINATOR_STATE_FILE_H_
