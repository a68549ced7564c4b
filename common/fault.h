// Named fault points for fault-injection tests (in the spirit of Kudu's util/fault_injection.h).
//
// Code marks places where things can go wrong:
//   if (auto f = TESSERA_FAULT("server.push.after_apply"); f.fired()) { ... }
// and a test switches points on from the environment ($TESSERA_FAULTS) or a daemon's --faults
// flag, as a comma-separated list of  point=action[:arg][#count][@probability][+skip] :
//   fail             the caller fails the operation (a dropped request)
//   drop_response    the caller completes the operation, then reports an error (a lost response)
//   delay:DURATION   sleeps, e.g. delay:200ms
//   crash            _exit(137) right here, as if killed with SIGKILL
//   #N fires at most N times; @P fires with probability P; +K skips the first K hits.
// Example: TESSERA_FAULTS="server.push.after_apply=drop_response#3,worker.batch=crash+40"
//
// Off by default and free when off: with no faults configured a point is one relaxed atomic load.
// The configuration is process-wide (a test-only facility); all functions are thread-safe.
#ifndef TESSERA_COMMON_FAULT_H_
#define TESSERA_COMMON_FAULT_H_

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tessera {

class FaultHit {
 public:
  enum class Kind { kNone, kFail, kDropResponse };
  FaultHit() = default;
  explicit FaultHit(Kind k, absl::string_view point) : kind_(k), point_(point) {}
  bool fired() const { return kind_ != Kind::kNone; }
  Kind kind() const { return kind_; }
  // The error a caller returns for this hit (UNAVAILABLE "injected fault at <point>").
  absl::Status status() const;

 private:
  Kind kind_ = Kind::kNone;
  absl::string_view point_;
};

namespace fault_internal {
extern std::atomic<bool> g_enabled;
FaultHit Hit(absl::string_view point);
}  // namespace fault_internal

// Parses and installs a fault configuration (replacing any previous one); INVALID_ARGUMENT
// naming the bad entry. An empty string switches every point off.
absl::Status ConfigureFaults(const std::string& spec);
// Installs $TESSERA_FAULTS when set; call once early in main().
absl::Status ConfigureFaultsFromEnv();

// Evaluates fault point `point` (a string literal). Delays and crashes happen inside; fail and
// drop_response are returned for the caller to act on.
inline FaultHit Fault(absl::string_view point) {
  if (!fault_internal::g_enabled.load(std::memory_order_relaxed)) return FaultHit();
  return fault_internal::Hit(point);
}

}  // namespace tessera

#define TESSERA_FAULT(point) ::tessera::Fault(point)

#endif  // TESSERA_COMMON_FAULT_H_
