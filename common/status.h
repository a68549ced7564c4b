// Status helpers: absl::Status inside Tessera, grpc::Status only at service edges.
// All functions are pure and thread-safe.
#ifndef TESSERA_COMMON_STATUS_H_
#define TESSERA_COMMON_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/strings/string_view.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

// Same code and message; gRPC and absl share the canonical code numbering.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Prefixes the message of a non-OK status with `context` ("context: message").
absl::Status Annotate(const absl::Status& status, absl::string_view context);

// True for codes worth retrying after a backoff (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, ...).
bool IsRetryable(const absl::Status& status);

}  // namespace tessera

#define TESSERA_STATUS_CONCAT_INNER_(a, b) a##b
#define TESSERA_STATUS_CONCAT_(a, b) TESSERA_STATUS_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status tessera_status_ = (expr);             \
    if (!tessera_status_.ok()) return tessera_status_;   \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(TESSERA_STATUS_CONCAT_(tessera_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()

#endif  // TESSERA_COMMON_STATUS_H_
