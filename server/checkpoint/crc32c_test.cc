#include "server/checkpoint/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace tessera::server {
namespace {

// Runs `check` with each implementation available on this machine.
template <typename Fn>
void ForEachImplementation(Fn check) {
  check("portable", &Crc32cPortable);
  if (Crc32cHardwareAvailable()) check("sse4.2", &Crc32cHardware);
  check("dispatch", &Crc32c);
}

TEST(Crc32cTest, KnownVectors) {
  ForEachImplementation([](const char* name, uint32_t (*crc)(const void*, size_t, uint32_t)) {
    SCOPED_TRACE(name);
    EXPECT_EQ(crc("123456789", 9, 0), 0xE3069283u);
    // RFC 3720 (iSCSI), appendix B.4.
    std::vector<unsigned char> buf(32, 0);
    EXPECT_EQ(crc(buf.data(), buf.size(), 0), 0x8A9136AAu);
    std::fill(buf.begin(), buf.end(), 0xFF);
    EXPECT_EQ(crc(buf.data(), buf.size(), 0), 0x62A8AB43u);
    for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(i);
    EXPECT_EQ(crc(buf.data(), buf.size(), 0), 0x46DD794Eu);
    for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(31 - i);
    EXPECT_EQ(crc(buf.data(), buf.size(), 0), 0x113FDB5Cu);
    EXPECT_EQ(crc(nullptr, 0, 0), 0u);
    EXPECT_EQ(crc(nullptr, 0, 0x12345678), 0x12345678u);
  });
}

TEST(Crc32cTest, ExtendEqualsOneShotAtEverySplit) {
  std::mt19937_64 rng(1);
  std::string data(300, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  ForEachImplementation([&](const char* name, uint32_t (*crc)(const void*, size_t, uint32_t)) {
    SCOPED_TRACE(name);
    const uint32_t whole = crc(data.data(), data.size(), 0);
    for (size_t split = 0; split <= data.size(); ++split) {
      const uint32_t a = crc(data.data(), split, 0);
      ASSERT_EQ(crc(data.data() + split, data.size() - split, a), whole) << "split " << split;
    }
  });
}

TEST(Crc32cTest, HardwareAndPortableAgreeOnRandomData) {
  if (!Crc32cHardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  std::mt19937_64 rng(2);
  std::string data((1 << 20) + 37, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  // Every alignment and every short length, so the head / tail loops are covered.
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t n = 0; n < 200; ++n) {
      const uint32_t init = static_cast<uint32_t>(rng());
      ASSERT_EQ(Crc32cHardware(data.data() + offset, n, init), Crc32cPortable(data.data() + offset, n, init))
          << "offset " << offset << " length " << n;
    }
  }
  for (int trial = 0; trial < 20; ++trial) {
    const size_t offset = rng() % 64;
    const size_t n = rng() % (data.size() - offset);
    ASSERT_EQ(Crc32cHardware(data.data() + offset, n), Crc32cPortable(data.data() + offset, n));
  }
  EXPECT_EQ(Crc32cHardware(data.data(), data.size()), Crc32cPortable(data.data(), data.size()));
}

TEST(Crc32cTest, EverySingleBitFlipChangesTheCrc) {
  std::string data(64, 'x');
  const uint32_t base = Crc32c(data.data(), data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string copy = data;
      copy[i] = static_cast<char>(copy[i] ^ (1 << bit));
      ASSERT_NE(Crc32c(copy.data(), copy.size()), base) << "byte " << i << " bit " << bit;
    }
  }
}

}  // namespace
}  // namespace tessera::server
