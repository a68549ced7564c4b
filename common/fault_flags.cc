// The --faults flag every Tessera binary takes (fault-injection tests), linked into each binary.
#include "absl/flags/flag.h"
#include "common/fault.h"
#include "common/security_flags.h"

ABSL_FLAG(std::string, faults, "", "Testing: fault points to switch on, e.g. server.push.after_apply=drop_response#3 (see common/fault.h); also read from $TESSERA_FAULTS.");

namespace tessera {

absl::Status ConfigureFaultsFromFlagsAndEnv() {
  if (const std::string f = absl::GetFlag(FLAGS_faults); !f.empty()) return ConfigureFaults(f);
  return ConfigureFaultsFromEnv();
}

}  // namespace tessera
