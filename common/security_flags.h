// The security flags every Tessera binary takes (--tls_cert, --tls_key, --tls_ca,
// --auth_token_file), defined once here and linked into each binary.
#ifndef TESSERA_COMMON_SECURITY_FLAGS_H_
#define TESSERA_COMMON_SECURITY_FLAGS_H_

#include "common/security.h"

namespace tessera {

// The SecurityOptions given on the command line.
SecurityOptions SecurityOptionsFromFlags();

}  // namespace tessera

#endif  // TESSERA_COMMON_SECURITY_FLAGS_H_
