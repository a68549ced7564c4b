// The flags every Tessera binary takes — security (--tls_cert, --tls_key, --tls_ca,
// --auth_token_file) and fault injection (--faults) — defined once and linked into each binary.
#ifndef TESSERA_COMMON_SECURITY_FLAGS_H_
#define TESSERA_COMMON_SECURITY_FLAGS_H_

#include "common/security.h"

namespace tessera {

// The SecurityOptions given on the command line.
SecurityOptions SecurityOptionsFromFlags();

// Installs the fault points of --faults, else of $TESSERA_FAULTS (fault-injection tests).
absl::Status ConfigureFaultsFromFlagsAndEnv();

}  // namespace tessera

#endif  // TESSERA_COMMON_SECURITY_FLAGS_H_
