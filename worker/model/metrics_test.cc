#include "worker/model/metrics.h"

#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::worker {
namespace {

using ::testing::HasSubstr;

// Natural logs of float probabilities, computed in double as the accumulator does.
double Ln(float p) { return std::log(static_cast<double>(p)); }
double Ln1m(float p) { return std::log(1.0 - static_cast<double>(p)); }

TEST(EvalAccumulatorTest, BinaryHandComputed) {
  EvalAccumulator acc;
  acc.Add({0.9f, 0.2f, 0.6f, 0.4f}, {1, 0, 0, 1}, 1);
  EXPECT_EQ(acc.count(), 4u);
  EXPECT_EQ(acc.correct(), 2u);
  EXPECT_DOUBLE_EQ(acc.accuracy(), 0.5);
  const double expected = -(Ln(0.9f) + Ln1m(0.2f) + Ln1m(0.6f) + Ln(0.4f)) / 4;
  EXPECT_NEAR(acc.logloss(), expected, 1e-12);
  // Positives {0.9, 0.4} vs negatives {0.2, 0.6}: 3 of 4 pairs ordered right.
  EXPECT_DOUBLE_EQ(acc.auc(), 0.75);
  EXPECT_DOUBLE_EQ(ExactAuc(std::vector<float>{0.9f, 0.2f, 0.6f, 0.4f}, std::vector<float>{1, 0, 0, 1}), 0.75);
  EXPECT_EQ(acc.positives().size(), static_cast<size_t>(EvalAccumulator::kAucBins));
}

TEST(EvalAccumulatorTest, ThresholdAndClamping) {
  EvalAccumulator acc;
  acc.Add({0.5f, 0.0f, 1.0f}, {1, 1, 1}, 1);  // 0.5 counts as positive; p = 0 for a positive is clamped
  EXPECT_EQ(acc.correct(), 2u);
  EXPECT_NEAR(acc.logloss(), (std::log(2.0) - std::log(1e-15)) / 3, 1e-9);
  EXPECT_TRUE(std::isnan(acc.auc()));  // no negatives
}

TEST(EvalAccumulatorTest, MulticlassHandComputed) {
  EvalAccumulator acc;
  const std::vector<float> p = {0.7f, 0.2f, 0.1f,   //
                                0.1f, 0.3f, 0.6f,   //
                                0.4f, 0.4f, 0.2f,   // tie: the first largest (class 0) wins
                                0.2f, 0.5f, 0.3f};
  acc.Add(p, {0, 1, 1, 1}, 3);
  EXPECT_EQ(acc.correct(), 2u);  // examples 0 and 3
  EXPECT_NEAR(acc.logloss(), -(Ln(0.7f) + Ln(0.3f) + Ln(0.4f) + Ln(0.5f)) / 4, 1e-12);
  EXPECT_TRUE(std::isnan(acc.auc()));
  EXPECT_TRUE(acc.positives().empty());
}

TEST(EvalAccumulatorTest, TwoOutputsAreBinary) {
  EvalAccumulator acc;
  acc.Add({0.1f, 0.9f, 0.8f, 0.2f, 0.3f, 0.7f}, {1, 0, 0}, 2);
  EXPECT_EQ(acc.correct(), 2u);
  EXPECT_DOUBLE_EQ(acc.auc(), 1.0);  // the positive has the top P(class 1)
}

TEST(EvalAccumulatorTest, EmptyIsNaN) {
  EvalAccumulator acc;
  EXPECT_EQ(acc.count(), 0u);
  EXPECT_TRUE(std::isnan(acc.accuracy()));
  EXPECT_TRUE(std::isnan(acc.logloss()));
  EXPECT_TRUE(std::isnan(acc.auc()));
}

TEST(EvalAccumulatorTest, TiesCountHalf) {
  EvalAccumulator acc;
  const std::vector<float> scores(10, 0.3f);
  const std::vector<float> labels = {1, 0, 1, 0, 1, 1, 0, 0, 0, 1};
  acc.Add(scores, labels, 1);
  EXPECT_DOUBLE_EQ(acc.auc(), 0.5);
  EXPECT_DOUBLE_EQ(ExactAuc(scores, labels), 0.5);
}

TEST(EvalAccumulatorTest, HistogramAucMatchesExactAuc) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform;
  for (double separation : {0.0, 0.5, 2.0}) {
    std::vector<float> scores, labels;
    for (int i = 0; i < 100000; ++i) {
      const float y = uniform(rng) < 0.3f ? 1.0f : 0.0f;
      const double z = separation * (2 * y - 1) + normal(rng);
      scores.push_back(static_cast<float>(1.0 / (1.0 + std::exp(-z))));
      labels.push_back(y);
    }
    EvalAccumulator acc;
    acc.Add(scores, labels, 1);
    EXPECT_NEAR(acc.auc(), ExactAuc(scores, labels), 1e-3) << separation;
  }
}

TEST(EvalAccumulatorTest, MergeEqualsAddOfUnion) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> uniform;
  std::vector<float> scores, labels;
  for (int i = 0; i < 3000; ++i) {
    labels.push_back(uniform(rng) < 0.4f ? 1.0f : 0.0f);
    scores.push_back(0.5f * uniform(rng) + 0.4f * labels.back());
  }
  EvalAccumulator all;
  all.Add(scores, labels, 1);
  EvalAccumulator merged;
  for (int part = 0; part < 3; ++part) {
    EvalAccumulator one;
    one.Add(absl::MakeConstSpan(scores).subspan(part * 1000, 1000), absl::MakeConstSpan(labels).subspan(part * 1000, 1000),
            1);
    merged.Merge(one);
  }
  merged.Merge(EvalAccumulator());  // merging an empty accumulator changes nothing
  EXPECT_EQ(merged.count(), all.count());
  EXPECT_EQ(merged.correct(), all.correct());
  EXPECT_NEAR(merged.logloss_sum(), all.logloss_sum(), 1e-9 * all.logloss_sum());
  EXPECT_EQ(merged.positives(), all.positives());
  EXPECT_EQ(merged.negatives(), all.negatives());
  EXPECT_DOUBLE_EQ(merged.auc(), all.auc());
}

TEST(EvalAccumulatorTest, FromPartsRoundTripAndChecks) {
  EvalAccumulator acc;
  acc.Add({0.9f, 0.2f, 0.6f, 0.4f}, {1, 0, 0, 1}, 1);
  auto rebuilt = EvalAccumulator::FromParts(acc.count(), acc.correct(), acc.logloss_sum(), acc.positives(),
                                            acc.negatives());
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(rebuilt->count(), 4u);
  EXPECT_DOUBLE_EQ(rebuilt->auc(), 0.75);
  EXPECT_DOUBLE_EQ(rebuilt->logloss(), acc.logloss());

  auto multiclass = EvalAccumulator::FromParts(10, 7, 3.5, {}, {});
  ASSERT_TRUE(multiclass.ok());
  EXPECT_DOUBLE_EQ(multiclass->accuracy(), 0.7);

  EXPECT_THAT(std::string(EvalAccumulator::FromParts(3, 4, 0, {}, {}).status().message()),
              HasSubstr("correct = 4 exceeds count = 3"));
  EXPECT_THAT(std::string(EvalAccumulator::FromParts(3, 1, -1, {}, {}).status().message()),
              HasSubstr("logloss_sum"));
  EXPECT_THAT(std::string(EvalAccumulator::FromParts(3, 1, 0, std::vector<uint64_t>(5), std::vector<uint64_t>(5))
                              .status()
                              .message()),
              HasSubstr("expected 0 or 10000"));
  EXPECT_THAT(std::string(EvalAccumulator::FromParts(1, 0, 0, acc.positives(), acc.negatives()).status().message()),
              HasSubstr("more than count = 1"));
}

TEST(ExactAucTest, PerfectAndReversed) {
  EXPECT_DOUBLE_EQ(ExactAuc(std::vector<float>{0.1f, 0.2f, 0.8f, 0.9f}, std::vector<float>{0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(ExactAuc(std::vector<float>{0.1f, 0.2f, 0.8f, 0.9f}, std::vector<float>{1, 1, 0, 0}), 0.0);
  EXPECT_TRUE(std::isnan(ExactAuc(std::vector<float>{0.1f}, std::vector<float>{1})));
}

}  // namespace
}  // namespace tessera::worker
