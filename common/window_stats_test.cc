#include "common/window_stats.h"

#include <gtest/gtest.h>

namespace tessera {
namespace {

TEST(WindowStatsTest, RateAndQuantilesOverTheWindow) {
  WindowStats w;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 990; ++i) w.RecordAt(100.0, t0);
  for (int i = 0; i < 10; ++i) w.RecordAt(10000.0, t0);
  EXPECT_DOUBLE_EQ(w.Rate(t0), 100.0);  // 1000 events over 10 s
  EXPECT_NEAR(w.Quantile(0.5, t0), 100.0, 10.0);
  EXPECT_NEAR(w.Quantile(0.999, t0), 10000.0, 1000.0);
  EXPECT_LT(w.Quantile(0.98, t0), 200.0);
}

TEST(WindowStatsTest, OldSecondsFallOutOfTheWindow) {
  WindowStats w;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  w.RecordAt(5.0, t0);
  EXPECT_GT(w.Rate(t0 + absl::Seconds(9)), 0.0);
  EXPECT_EQ(w.Rate(t0 + absl::Seconds(10)), 0.0);
  EXPECT_EQ(w.Quantile(0.5, t0 + absl::Seconds(11)), 0.0);
  w.RecordAt(7.0, t0 + absl::Seconds(20));  // reuses the slot of t0
  EXPECT_DOUBLE_EQ(w.Rate(t0 + absl::Seconds(20)), 0.1);
}

}  // namespace
}  // namespace tessera
