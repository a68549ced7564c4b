#include "server/exactly_once.h"

#include <gtest/gtest.h>

namespace tessera::server {
namespace {

TEST(ExactlyOnceFilterTest, AdmitsEachSequenceOncePerWorker) {
  ExactlyOnceFilter f;
  EXPECT_TRUE(f.Admit(1, 10));
  EXPECT_FALSE(f.Admit(1, 10));
  EXPECT_TRUE(f.Admit(2, 10)) << "workers are independent";
  EXPECT_TRUE(f.Admit(1, 12));
  EXPECT_TRUE(f.Admit(1, 11)) << "out of order inside the window";
  EXPECT_FALSE(f.Admit(1, 11));
  EXPECT_FALSE(f.Admit(1, 12));
  EXPECT_EQ(f.num_workers(), 2u);
}

TEST(ExactlyOnceFilterTest, SequencesOlderThanTheWindowCountAsSeen) {
  ExactlyOnceFilter f;
  EXPECT_TRUE(f.Admit(1, 1));
  EXPECT_TRUE(f.Admit(1, 1 + ExactlyOnceFilter::kWindow + 5));
  EXPECT_FALSE(f.Admit(1, 3)) << "too old to tell";
  EXPECT_TRUE(f.Admit(1, 10 + ExactlyOnceFilter::kWindow)) << "inside the window and never seen";
}

TEST(ExactlyOnceFilterTest, ForgetUndoesAnAdmit) {
  ExactlyOnceFilter f;
  EXPECT_TRUE(f.Admit(1, 5));
  f.Forget(1, 5);
  EXPECT_TRUE(f.Admit(1, 5));
}

TEST(ExactlyOnceFilterTest, SerializeRoundTrip) {
  ExactlyOnceFilter f;
  for (uint64_t s : {3, 7, 9}) f.Admit(42, s);
  f.Admit(43, 1);
  ExactlyOnceFilter g;
  ASSERT_TRUE(g.Deserialize(f.Serialize()));
  EXPECT_FALSE(g.Admit(42, 7));
  EXPECT_TRUE(g.Admit(42, 8));
  EXPECT_FALSE(g.Admit(43, 1));
  EXPECT_FALSE(g.Deserialize("garbage")) << "wrong length";
}

}  // namespace
}  // namespace tessera::server
