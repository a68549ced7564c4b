#include "server/coordinator/state_file.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "server/checkpoint/crc32c.h"
#include "server/checkpoint/file_util.h"

namespace tessera::coordinator {
namespace {
constexpr char kMagic[8] = {'T', 'S', 'R', 'C', 'O', 'O', 'R', 'D'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8;
}  // namespace

std::string StateFilePath(const std::string& state_dir) { return state_dir + "/coordinator.state"; }

absl::Status WriteStateFile(const std::string& path, const tessera::v1::CoordinatorState& state) {
  std::string payload;
  if (!state.SerializeToString(&payload)) return absl::InternalError("cannot serialize the coordinator state");
  std::string out(kHeaderBytes, '\0');
  const uint32_t crc = server::Crc32c(payload.data(), payload.size());
  const uint64_t len = payload.size();
  std::memcpy(out.data(), kMagic, 8);
  std::memcpy(out.data() + 8, &kFormatVersion, 4);
  std::memcpy(out.data() + 12, &crc, 4);
  std::memcpy(out.data() + 16, &len, 8);
  out += payload;
  RETURN_IF_ERROR(server::CreateDirectories(server::DirName(path)));
  return server::WriteFileAtomically(path, out);
}

absl::StatusOr<tessera::v1::CoordinatorState> ReadStateFile(const std::string& path) {
  ASSIGN_OR_RETURN(bool exists, server::PathExists(path));
  if (!exists) return absl::NotFoundError(absl::StrCat(path, ": no coordinator state"));
  ASSIGN_OR_RETURN(std::string data, server::ReadFile(path));
  if (data.size() < kHeaderBytes || std::memcmp(data.data(), kMagic, 8) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a coordinator state file (bad magic or too short)"));
  }
  uint32_t version, crc;
  uint64_t len;
  std::memcpy(&version, data.data() + 8, 4);
  std::memcpy(&crc, data.data() + 12, 4);
  std::memcpy(&len, data.data() + 16, 8);
  if (version != kFormatVersion) {
    return absl::DataLossError(absl::StrCat(path, ": format version ", version, " (this build reads ", kFormatVersion, ")"));
  }
  if (data.size() - kHeaderBytes != len) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated: header says ", len, " payload bytes, file has ", data.size() - kHeaderBytes));
  }
  const uint32_t actual = server::Crc32c(data.data() + kHeaderBytes, len);
  if (actual != crc) {
    return absl::DataLossError(absl::StrFormat("%s: CRC mismatch (stored 0x%08x, computed 0x%08x)", path, crc, actual));
  }
  tessera::v1::CoordinatorState state;
  if (!state.ParseFromArray(data.data() + kHeaderBytes, static_cast<int>(len))) {
    return absl::DataLossError(absl::StrCat(path, ": payload does not parse"));
  }
  return state;
}

}  // namespace tessera::coordinator
