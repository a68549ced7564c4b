// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of checkpoint files.
//
// Crc32c() uses the SSE4.2 crc32 instruction when the CPU has it (checked once, at run time) and a
// slicing-by-8 table otherwise; both give the same values. The functions are pure and thread-safe.
#ifndef TESSERA_SERVER_CHECKPOINT_CRC32C_H_
#define TESSERA_SERVER_CHECKPOINT_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace tessera::server {

// CRC32C of data[0, n). `init` is the CRC of preceding bytes, so
// Crc32c(b, nb, Crc32c(a, na)) == CRC32C of a followed by b. Crc32c("123456789", 9) == 0xE3069283.
uint32_t Crc32c(const void* data, size_t n, uint32_t init = 0);

// The two implementations behind Crc32c(), exposed for tests and benchmarks.
uint32_t Crc32cPortable(const void* data, size_t n, uint32_t init = 0);
// Requires Crc32cHardwareAvailable().
uint32_t Crc32cHardware(const void* data, size_t n, uint32_t init = 0);
bool Crc32cHardwareAvailable();

}  // namespace tessera::server

#endif  // TESSERA_SERVER_CHECKPOINT_CRC32C_H_
