// `tessera demo`: starts one tessera-server on loopback, pushes and pulls over gRPC and prints
// what happened. A first look at the system before running a training job.
#ifndef TESSERA_CLIENT_DEMO_H_
#define TESSERA_CLIENT_DEMO_H_

namespace tessera::client {

// Returns the process exit code.
int RunDemo();

}  // namespace tessera::client

#endif  // TESSERA_CLIENT_DEMO_H_
