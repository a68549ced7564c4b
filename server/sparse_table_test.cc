#include "server/sparse_table.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <thread>

namespace tessera::server {
namespace {

using tessera::v1::InitializerSpec;
using tessera::v1::OptimizerSpec;

struct Fixture {
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<Initializer> init;
  std::unique_ptr<SparseTable> table;
};

Fixture Make(uint32_t dim, const std::string& opt_type, float lr, const std::string& init_type = "zeros",
             float scale = 0, uint64_t seed = 1, float average_decay = 0) {
  Fixture f;
  OptimizerSpec os;
  os.set_type(opt_type);
  os.set_learning_rate(lr);
  os.set_average_decay(average_decay);
  f.opt = std::move(Optimizer::Create(os)).value();
  InitializerSpec is;
  is.set_type(init_type);
  is.set_scale(scale);
  is.set_seed(seed);
  f.init = std::make_unique<Initializer>(*Initializer::Create(is));
  f.table = std::make_unique<SparseTable>(dim, f.opt.get(), f.init.get(), 99);
  return f;
}

TEST(SparseTableTest, AbsentRowsReadAsTheirDeterministicInitialValue) {
  auto a = Make(4, "sgd", 1.0f, "uniform", 0.5f, 7);
  auto b = Make(4, "sgd", 1.0f, "uniform", 0.5f, 7);
  std::vector<uint64_t> keys = {1, 5, 1ull << 40};
  std::vector<float> va(12), vb(12), again(12);
  a.table->Pull(keys, va.data());
  b.table->Pull(keys, vb.data());
  a.table->Pull(keys, again.data());
  EXPECT_EQ(va, vb);
  EXPECT_EQ(va, again);
  EXPECT_EQ(a.table->num_rows(), 0u) << "pulls do not create rows";
  for (float v : va) {
    EXPECT_GE(v, -0.5f);
    EXPECT_LE(v, 0.5f);
  }
  EXPECT_NE(va[0], va[4]) << "different keys get different values";
  auto c = Make(4, "sgd", 1.0f, "uniform", 0.5f, 8);
  std::vector<float> vc(12);
  c.table->Pull(keys, vc.data());
  EXPECT_NE(va, vc) << "the seed matters";
}

TEST(SparseTableTest, PushCreatesRowsFromTheInitializerAndApplies) {
  auto f = Make(2, "sgd", 0.5f, "constant", 1.0f);
  std::vector<uint64_t> keys = {10, 20};
  std::vector<float> g = {1, 2, -2, 4};
  f.table->Push(keys, g.data(), 1.0f);
  EXPECT_EQ(f.table->num_rows(), 2u);
  std::vector<float> out(4);
  f.table->Pull(keys, out.data());
  EXPECT_EQ(out, (std::vector<float>{0.5f, 0.0f, 2.0f, -1.0f}));  // 1 - 0.5 * g
  f.table->Push(keys, g.data(), 2.0f);  // learning-rate scale 2
  f.table->Pull(keys, out.data());
  EXPECT_EQ(out, (std::vector<float>{-0.5f, -2.0f, 4.0f, -5.0f}));
}

TEST(SparseTableTest, GrowsToManyRowsAndKeepsEveryValue) {
  auto f = Make(3, "sgd", 1.0f);
  constexpr uint64_t kRows = 300000;
  std::mt19937_64 rng(5);
  std::vector<uint64_t> all(kRows);
  for (auto& k : all) k = rng();
  for (size_t start = 0; start < kRows; start += 10000) {
    std::vector<uint64_t> keys(all.begin() + start, all.begin() + start + 10000);
    std::vector<float> g(keys.size() * 3);
    for (size_t i = 0; i < keys.size(); ++i)
      for (int j = 0; j < 3; ++j) g[i * 3 + j] = static_cast<float>((keys[i] + j) % 1000);
    f.table->Push(keys, g.data(), 1.0f);
  }
  EXPECT_EQ(f.table->num_rows(), kRows);
  std::vector<float> out(kRows * 3);
  f.table->Pull(all, out.data());
  for (size_t i = 0; i < kRows; ++i) {
    for (int j = 0; j < 3; ++j) {
      ASSERT_EQ(out[i * 3 + j], -static_cast<float>((all[i] + j) % 1000)) << "row " << i;
    }
  }
  // 8-byte key + 3 weights, plus the index: well under 2x the payload.
  EXPECT_LT(f.table->memory_bytes(), kRows * 20 * 2);
}

TEST(SparseTableTest, ConcurrentPushesToTheSameRowsLoseNoUpdate) {
  auto f = Make(4, "sgd", 1.0f);
  constexpr int kThreads = 8, kPushes = 400;
  // Small requests (one lock per key) and large ones (grouped by stripe) both race on shared rows.
  std::vector<uint64_t> small = {1, 2, 3};
  std::vector<uint64_t> large(500);
  std::iota(large.begin(), large.end(), 1);  // overlaps `small`
  std::vector<float> gs(small.size() * 4, 1.0f), gl(large.size() * 4, 1.0f);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPushes; ++i) {
        if ((i + t) % 2 == 0) {
          f.table->Push(small, gs.data(), 1.0f);
        } else {
          f.table->Push(large, gl.data(), 1.0f);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<float> out(large.size() * 4);
  f.table->Pull(large, out.data());
  // Every thread pushed `small` kPushes/2 times and `large` kPushes/2 times.
  const float both = -static_cast<float>(kThreads * kPushes);
  const float only_large = -static_cast<float>(kThreads * kPushes / 2);
  for (size_t i = 0; i < large.size(); ++i) {
    for (int j = 0; j < 4; ++j) ASSERT_EQ(out[i * 4 + j], i < 3 ? both : only_large) << "key " << large[i];
  }
  EXPECT_EQ(f.table->num_rows(), large.size());
}

TEST(SparseTableTest, AdamCountsStepsPerRow) {
  auto f = Make(1, "adam", 0.1f);
  ASSERT_TRUE(f.table->has_step());
  std::vector<uint64_t> a = {1}, b = {2};
  float g = 1.0f;
  for (int i = 0; i < 3; ++i) f.table->Push(a, &g, 1.0f);
  f.table->Push(b, &g, 1.0f);
  float wb = 0;
  f.table->Pull(b, &wb);
  // First Adam step of a fresh row moves it by lr * sign(g) (bias correction with t = 1).
  EXPECT_NEAR(wb, -0.1f, 1e-6f);
  float wa = 0;
  f.table->Pull(a, &wa);
  EXPECT_NEAR(wa, -0.3f, 1e-5f);
}

TEST(SparseTableTest, RawRowsRoundTripThroughCopyAndLoad) {
  auto f = Make(2, "adagrad", 0.3f, "normal", 0.1f);
  std::vector<uint64_t> keys(1000);
  std::iota(keys.begin(), keys.end(), 100);
  std::vector<float> g(2000, 0.25f);
  f.table->Push(keys, g.data(), 1.0f);
  std::string raw;
  size_t rows = 0;
  for (int s = 0; s < SparseTable::kNumStripes; ++s) rows += f.table->CopyStripe(s, &raw);
  EXPECT_EQ(rows, 1000u);
  EXPECT_EQ(raw.size(), rows * f.table->row_bytes());
  auto g2 = Make(2, "adagrad", 0.3f, "normal", 0.1f);
  g2.table->LoadRows(raw.data(), rows);
  // Same weights and same optimizer state: one more identical push keeps them identical.
  f.table->Push(keys, g.data(), 1.0f);
  g2.table->Push(keys, g.data(), 1.0f);
  std::vector<float> o1(2000), o2(2000);
  f.table->Pull(keys, o1.data());
  g2.table->Pull(keys, o2.data());
  EXPECT_EQ(o1, o2);
}

TEST(SparseTableTest, AveragedPullReadsTheMovingAverageOfEachRow) {
  auto f = Make(3, "sgd", 1.0f, "uniform", 0.5f, 7, /*average_decay=*/0.5f);
  const std::vector<uint64_t> keys = {11, 12};
  std::vector<float> init(6), avg(6), w(6);
  f.table->Pull(keys, init.data());
  // Absent rows: the average is the initial value.
  f.table->Pull(keys, avg.data(), /*averaged=*/true);
  EXPECT_EQ(avg, init);
  // Row 11 gets two pushes, row 12 none: avg_1 = (init + w_1) / 2, avg_2 = (avg_1 + w_2) / 2.
  const std::vector<uint64_t> one = {11};
  const std::vector<float> g = {1.0f, 2.0f, -4.0f};
  f.table->Push(one, g.data(), 1.0f);
  f.table->Push(one, g.data(), 1.0f);
  f.table->Pull(keys, w.data());
  f.table->Pull(keys, avg.data(), true);
  for (int i = 0; i < 3; ++i) {
    const float w1 = init[i] - g[i], w2 = init[i] - 2 * g[i];
    EXPECT_FLOAT_EQ(w[i], w2);
    EXPECT_FLOAT_EQ(avg[i], ((init[i] + w1) / 2 + w2) / 2) << i;
    EXPECT_EQ(avg[3 + i], init[3 + i]);
    EXPECT_EQ(w[3 + i], init[3 + i]);
  }
  // The average is part of the row, so checkpoints carry it.
  std::string raw;
  size_t rows = 0;
  for (int s = 0; s < SparseTable::kNumStripes; ++s) rows += f.table->CopyStripe(s, &raw);
  auto g2 = Make(3, "sgd", 1.0f, "uniform", 0.5f, 7, 0.5f);
  g2.table->LoadRows(raw.data(), rows);
  std::vector<float> restored(6);
  g2.table->Pull(keys, restored.data(), true);
  EXPECT_EQ(restored, avg);
}

}  // namespace
}  // namespace tessera::server
