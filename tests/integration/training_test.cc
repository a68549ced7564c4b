// Training on real data (small slices of Fashion-MNIST) with real processes: `tessera local` end
// to end, SSP's bounded staleness with a slowed worker, BSP's bit-identical runs, sparse models.
#include <gmock/gmock.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <fstream>
#include <cstring>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/kv_client.h"
#include "common/job_json.h"
#include "tests/testing/mini_cluster.h"
#include "worker/model/model.h"

namespace tessera {
namespace {

using tessera::v1::JobStatus;
using testing::MiniCluster;

class TrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveFashionMnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    auto train = testing::WriteFashionMnistLibsvm(dir_.path(), "train.libsvm", true, 3000);
    auto test = testing::WriteFashionMnistLibsvm(dir_.path(), "test.libsvm", false, 1000);
    ASSERT_TRUE(train.ok() && test.ok());
    train_ = *train;
    test_ = *test;
  }
  std::string SoftmaxSpec(const std::string& training, const std::string& name = "softmax",
                          const std::string& optimizer = R"({"type": "adagrad", "learning_rate": 0.1})") {
    return absl::StrCat(R"({"name": ")", name, R"(", "model": {"type": "softmax", "num_features": 784, "num_classes": 10},
      "data": {"train": ")", train_, R"(", "test": ")", test_, R"(", "format": "libsvm", "chunk_bytes": 300000},
      "optimizer": )", optimizer, R"(,
      "training": {)", training, "}}");
  }
  // All rows of a finished softmax job's table, read through the cluster's shard map.
  std::vector<float> SoftmaxWeights(MiniCluster& cluster, uint64_t job, bool averaged = false) {
    auto kv = client::KvClient::Create(cluster.client().ShardMaps());
    EXPECT_TRUE(kv.ok());
    std::vector<uint64_t> keys;
    for (uint64_t f = 1; f <= 784; ++f) keys.push_back(f);
    keys.push_back(worker::kBiasKey);
    std::vector<float> w(keys.size() * 10);
    client::PullOptions options;
    options.averaged = averaged;
    EXPECT_TRUE((*kv)->Pull(absl::StrCat("job-", job, "/params"), keys, absl::MakeSpan(w), options).ok());
    return w;
  }
  testing::TempDir dir_;
  std::string train_, test_;
};

TEST_F(TrainingTest, LocalTrainsEndToEndAndWritesTheReport) {
  const std::string spec = testing::WriteJobSpec(dir_.path(), "job.json", SoftmaxSpec(R"("epochs": 3, "batch_size": 64)"));
  const std::string report = dir_.Sub("report.json");
  auto r = testing::RunCommand(testing::BinaryPath("tessera"),
                               {"local", spec, "--servers=2", "--workers=2", absl::StrCat("--report=", report),
                                absl::StrCat("--work_dir=", dir_.Sub("work"))},
                               dir_.Sub("local.out"), absl::Seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, ::testing::HasSubstr("final test accuracy"));
  std::ifstream in(report);
  std::stringstream ss;
  ss << in.rdbuf();
  google::protobuf::Struct json;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ss.str(), &json).ok()) << ss.str();
  const auto& f = json.fields();
  for (const char* key : {"test_accuracy", "test_logloss", "examples_per_sec", "wall_seconds", "epochs"}) {
    EXPECT_TRUE(f.count(key)) << key << " missing from " << ss.str();
  }
  EXPECT_EQ(f.at("state").string_value(), "SUCCEEDED");
  EXPECT_EQ(f.at("epochs").number_value(), 3);
  EXPECT_GT(f.at("test_accuracy").number_value(), 0.6) << "chance is 0.1";
  EXPECT_GT(f.at("examples_per_sec").number_value(), 0);
  const auto& losses = f.at("train_loss_per_epoch").list_value().values();
  ASSERT_EQ(losses.size(), 3);
  EXPECT_LT(losses[2].number_value(), losses[0].number_value()) << "the loss falls";
  EXPECT_FALSE(f.count("test_auc")) << "AUC is for binary models only";
}

TEST_F(TrainingTest, SspKeepsTheSlowWorkerWithinTheStalenessBound) {
  MiniCluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  auto spec = ParseJobSpecJson(
      SoftmaxSpec(R"("epochs": 1, "batch_size": 32, "consistency": "ssp", "staleness": 2, "num_workers": 2)"), "ssp");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto sub = cluster.client().SubmitJob(*spec);
  ASSERT_TRUE(sub.ok()) << sub.status();
  auto fast = cluster.StartWorker(sub->job_id(), "fast");
  auto slow = cluster.StartWorker(sub->job_id(), "slow", {"--batch_delay=15ms"});
  ASSERT_TRUE(fast.ok() && slow.ok());
  auto job = cluster.WaitForJobEnd(sub->job_id(), absl::Seconds(90));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), tessera::v1::SUCCEEDED) << job->message();
  std::printf("ssp staleness 2: max clock gap seen %u\n", job->max_clock_gap());
  EXPECT_LE(job->max_clock_gap(), 2u) << "no worker ran more than 2 clocks ahead of the slowest";
  EXPECT_EQ(job->max_clock_gap(), 2u) << "the fast worker did use its allowance (it is not BSP in disguise)";
}

TEST_F(TrainingTest, BspRunsAreBitIdentical) {
  // With a moving average of the weights kept on the servers (what evaluation reads): it is part of
  // the deterministic state too.
  const std::string json =
      SoftmaxSpec(R"("epochs": 2, "batch_size": 50, "consistency": "bsp", "num_workers": 2, "seed": 7)", "bsp",
                  R"({"type": "adagrad", "learning_rate": 0.1, "average_decay": 0.99})");
  std::vector<std::vector<float>> weights, averages;
  for (int run = 0; run < 2; ++run) {
    MiniCluster cluster;
    ASSERT_TRUE(cluster.Start().ok());
    auto spec = ParseJobSpecJson(json, "bsp");
    ASSERT_TRUE(spec.ok());
    auto sub = cluster.client().SubmitJob(*spec);
    ASSERT_TRUE(sub.ok()) << sub.status();
    // Different start order and timing each run: the result must not depend on it.
    auto a = cluster.StartWorker(sub->job_id(), run == 0 ? "w0" : "w1");
    if (run == 1) absl::SleepFor(absl::Milliseconds(300));
    auto b = cluster.StartWorker(sub->job_id(), run == 0 ? "w1" : "w0", run == 0 ? std::vector<std::string>{"--batch_delay=2ms"} : std::vector<std::string>{});
    ASSERT_TRUE(a.ok() && b.ok());
    auto job = cluster.WaitForJobEnd(sub->job_id(), absl::Seconds(120));
    ASSERT_TRUE(job.ok()) << job.status();
    ASSERT_EQ(job->state(), tessera::v1::SUCCEEDED) << job->message();
    EXPECT_EQ(job->max_clock_gap(), 0u);
    EXPECT_GT(job->evaluations(0).accuracy(), 0.6);
    weights.push_back(SoftmaxWeights(cluster, sub->job_id()));
    averages.push_back(SoftmaxWeights(cluster, sub->job_id(), /*averaged=*/true));
  }
  ASSERT_EQ(weights[0].size(), weights[1].size());
  size_t nonzero = 0;
  for (float v : weights[0]) nonzero += v != 0.0f;
  EXPECT_GT(nonzero, weights[0].size() / 2) << "the model trained";
  EXPECT_EQ(0, std::memcmp(weights[0].data(), weights[1].data(), weights[0].size() * sizeof(float)))
      << "two bsp runs with the same seed give bit-identical weights";
  ASSERT_EQ(averages[0].size(), weights[0].size());
  EXPECT_EQ(0, std::memcmp(averages[0].data(), averages[1].data(), averages[0].size() * sizeof(float)))
      << "and bit-identical weight averages";
  size_t lagging = 0;
  for (size_t i = 0; i < weights[0].size(); ++i) lagging += averages[0][i] != weights[0][i];
  EXPECT_GT(lagging, weights[0].size() / 2) << "the average is not the weights";
}

TEST_F(TrainingTest, SparseLogisticAndFmLearnABinaryTask) {
  // Shirt (class 6) against everything else: hard enough that AUC means something.
  auto train = testing::WriteFashionMnistLibsvm(dir_.path(), "train-bin.libsvm", true, 3000, 6);
  auto test = testing::WriteFashionMnistLibsvm(dir_.path(), "test-bin.libsvm", false, 1000, 6);
  ASSERT_TRUE(train.ok() && test.ok());
  MiniCluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  for (const std::string model : {R"("type": "logistic")", R"("type": "fm", "factor_dim": 4)"}) {
    auto spec = ParseJobSpecJson(absl::StrCat(R"({"model": {)", model, R"(, "num_features": 784},
      "data": {"train": ")", *train, R"(", "test": ")", *test, R"(", "chunk_bytes": 300000},
      "optimizer": {"type": "ftrl", "alpha": 0.2},
      "training": {"epochs": 4, "batch_size": 32}})"), model);
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto sub = cluster.client().SubmitJob(*spec);
    ASSERT_TRUE(sub.ok()) << sub.status();
    auto w = cluster.StartWorker(sub->job_id(), absl::StrCat("w", sub->job_id()));
    ASSERT_TRUE(w.ok());
    auto job = cluster.WaitForJobEnd(sub->job_id(), absl::Seconds(60));
    ASSERT_TRUE(job.ok()) << job.status();
    ASSERT_EQ(job->state(), tessera::v1::SUCCEEDED) << job->message();
    ASSERT_EQ(job->evaluations_size(), 1);
    const auto& e = job->evaluations(0);
    std::printf("%s: test accuracy %.4f, AUC %.4f\n", model.c_str(), e.accuracy(), e.auc());
    EXPECT_TRUE(e.has_auc());
    EXPECT_GT(e.auc(), 0.8) << model << ": the scores rank shirts above the rest (0.5 is chance)";
    EXPECT_GE(e.accuracy(), 0.9) << model << " (1 in 10 is a shirt: the model must not lose to always-0)";
  }
}

}  // namespace
}  // namespace tessera
