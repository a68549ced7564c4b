// JobSpec <-> JSON (protobuf's JSON mapping), with errors that name the file.
#ifndef TESSERA_COMMON_JOB_JSON_H_
#define TESSERA_COMMON_JOB_JSON_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tessera/v1/job.pb.h"

namespace tessera {

// Parses a job spec; unknown fields are errors. `source` names the input in messages.
absl::StatusOr<tessera::v1::JobSpec> ParseJobSpecJson(absl::string_view json, absl::string_view source);
// Reads and parses a JSON job spec file. Relative data and checkpoint paths in it are taken
// relative to the file's directory and made absolute, so specs can sit next to their data.
absl::StatusOr<tessera::v1::JobSpec> ReadJobSpecFile(const std::string& path);

// Any message as JSON with the .proto field names (what users write), indented when `pretty`.
std::string ToJson(const google::protobuf::Message& message, bool pretty = true);

}  // namespace tessera

#endif  // TESSERA_COMMON_JOB_JSON_H_
