// Facts about the current process, for status and benchmarks. Thread-safe.
#ifndef TESSERA_COMMON_PROCESS_H_
#define TESSERA_COMMON_PROCESS_H_

#include <cstdint>
#include <string>

namespace tessera {

// Resident set size of process `pid` (0 = this process) in bytes, or 0 if unknown.
uint64_t ResidentBytes(int pid = 0);

// Directory holding the running executable (for finding sibling binaries).
std::string ExecutableDir();

}  // namespace tessera

#endif  // TESSERA_COMMON_PROCESS_H_
