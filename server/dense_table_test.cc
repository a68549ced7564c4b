#include "server/dense_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <thread>

namespace tessera::server {
namespace {

struct Fixture {
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<Initializer> init;
  std::unique_ptr<DenseTable> table;
};

Fixture Make(DenseRange range, const std::string& type, float lr, const std::string& init = "zeros", float scale = 0,
             float average_decay = 0) {
  Fixture f;
  tessera::v1::OptimizerSpec os;
  os.set_type(type);
  os.set_learning_rate(lr);
  os.set_average_decay(average_decay);
  f.opt = std::move(Optimizer::Create(os)).value();
  tessera::v1::InitializerSpec is;
  is.set_type(init);
  is.set_scale(scale);
  f.init = std::make_unique<Initializer>(*Initializer::Create(is));
  f.table = std::make_unique<DenseTable>(range, f.opt.get(), f.init.get());
  return f;
}

TEST(DenseTableTest, InitialValuesDependOnTheGlobalIndexNotTheShard) {
  auto whole = Make({0, 50000}, "sgd", 1.0f, "uniform", 1.0f);
  auto part = Make({20000, 50000}, "sgd", 1.0f, "uniform", 1.0f);
  std::vector<float> a(100), b(100);
  whole.table->Pull(30000, 100, a.data());
  part.table->Pull(30000, 100, b.data());
  EXPECT_EQ(a, b);
}

TEST(DenseTableTest, PushAcrossBlockBoundariesAppliesEveryElement) {
  const uint64_t begin = 1000, n = 3 * DenseTable::kBlockElements + 17;
  auto f = Make({begin, begin + n}, "sgd", 0.5f);
  // A slice that straddles two block boundaries.
  const uint64_t off = begin + DenseTable::kBlockElements - 5, len = DenseTable::kBlockElements + 10;
  std::vector<float> g(len);
  for (uint64_t i = 0; i < len; ++i) g[i] = static_cast<float>(i % 13);
  f.table->Push(off, g.data(), len, 1.0f);
  std::vector<float> out(n);
  f.table->Pull(begin, n, out.data());
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t global = begin + i;
    const float want = (global >= off && global < off + len) ? -0.5f * static_cast<float>((global - off) % 13) : 0.0f;
    ASSERT_EQ(out[i], want) << "element " << global;
  }
}

TEST(DenseTableTest, ConcurrentPushesLoseNoUpdate) {
  auto f = Make({0, 40000}, "sgd", 1.0f);
  std::vector<float> g(40000, 1.0f);
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) f.table->Push(0, g.data(), g.size(), 1.0f);
    });
  }
  for (auto& t : threads) t.join();
  std::vector<float> out(40000);
  f.table->Pull(0, 40000, out.data());
  for (float v : out) ASSERT_EQ(v, -1200.0f);
}

TEST(DenseTableTest, CopyAndLoadRestoreWeightsSlotsAndSteps) {
  auto a = Make({0, 20000}, "adam", 0.01f);
  std::vector<float> g(20000, 0.3f);
  a.table->Push(0, g.data(), g.size(), 1.0f);
  a.table->Push(0, g.data(), g.size(), 1.0f);
  std::string raw;
  a.table->CopyAll(&raw);
  auto b = Make({0, 20000}, "adam", 0.01f);
  ASSERT_TRUE(b.table->LoadAll(raw));
  EXPECT_FALSE(b.table->LoadAll(raw.substr(1))) << "a short image is refused";
  a.table->Push(0, g.data(), g.size(), 1.0f);
  b.table->Push(0, g.data(), g.size(), 1.0f);
  std::vector<float> oa(20000), ob(20000);
  a.table->Pull(0, 20000, oa.data());
  b.table->Pull(0, 20000, ob.data());
  EXPECT_EQ(oa, ob);
}

}  // namespace
}  // namespace tessera::server

namespace tessera::server {
namespace {

TEST(DenseTableTest, AveragedPullReadsTheMovingAverageAcrossBlocks) {
  // A range that spans three blocks and starts mid-tensor; the read crosses both block borders.
  const uint64_t begin = 1000, end = begin + 2 * DenseTable::kBlockElements + 500;
  auto f = Make({begin, end}, "adagrad", 0.1f, "uniform", 1.0f, /*average_decay=*/0.9f);
  const uint64_t n = end - begin;
  std::vector<float> init(n), w(n), avg(n), g(n);
  f.table->Pull(begin, n, init.data());
  f.table->Pull(begin, n, avg.data(), /*averaged=*/true);
  EXPECT_EQ(avg, init);
  for (uint64_t i = 0; i < n; ++i) g[i] = std::sin(0.01 * i);
  std::vector<double> ref(init.begin(), init.end());
  for (int t = 0; t < 3; ++t) {
    f.table->Push(begin, g.data(), n, 1.0f);
    f.table->Pull(begin, n, w.data());
    for (uint64_t i = 0; i < n; ++i) ref[i] += 0.1 * (w[i] - ref[i]);
  }
  f.table->Pull(begin, n, avg.data(), true);
  int moved = 0;
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(avg[i], ref[i], 1e-5) << i;
    moved += avg[i] != w[i];
  }
  EXPECT_GT(moved, static_cast<int>(n / 2));
  // A slice in the middle reads the same averages.
  std::vector<float> slice(700);
  f.table->Pull(begin + DenseTable::kBlockElements - 300, 700, slice.data(), true);
  EXPECT_TRUE(std::equal(slice.begin(), slice.end(), avg.begin() + DenseTable::kBlockElements - 300));
}

TEST(InitializerTest, DenseSegmentsUseTheirOwnTypeAndScale) {
  tessera::v1::InitializerSpec spec;
  spec.set_type("constant");
  spec.set_scale(9.0f);
  auto* a = spec.add_segments();
  a->set_end(100);
  a->set_type("uniform");
  a->set_scale(0.01f);
  auto* b = spec.add_segments();
  b->set_end(110);
  b->set_type("zeros");
  auto init = Initializer::Create(spec);
  ASSERT_TRUE(init.ok()) << init.status();
  std::vector<float> w(120);
  init->FillDense(0, w.data(), w.size());
  for (int i = 0; i < 100; ++i) EXPECT_LE(std::fabs(w[i]), 0.01f);
  for (int i = 100; i < 110; ++i) EXPECT_EQ(w[i], 0.0f);
  for (int i = 110; i < 120; ++i) EXPECT_EQ(w[i], 9.0f);
  std::vector<float> tail(30);
  init->FillDense(90, tail.data(), tail.size());
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), w.begin() + 90)) << "a slice reads the same values";
  b->set_end(50);
  EXPECT_FALSE(Initializer::Create(spec).ok()) << "segment ends must increase";
}

}  // namespace
}  // namespace tessera::server
