#include "server/coordinator/job_spec.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/data/chunks.h"
#include "common/data/idx.h"
#include "common/status.h"
#include "server/optimizer.h"
#include "worker/model/model.h"

namespace tessera::coordinator {

using tessera::v1::JobSpec;

void ApplyDefaults(JobSpec* spec) {
  if (spec->name().empty()) spec->set_name(spec->model().type().empty() ? "job" : spec->model().type());
  auto* m = spec->mutable_model();
  if (m->num_classes() == 0) m->set_num_classes(2);
  if (m->factor_dim() == 0) m->set_factor_dim(8);
  if (m->seed() == 0) m->set_seed(1);
  auto* d = spec->mutable_data();
  if (d->format().empty()) d->set_format("libsvm");
  if (d->format() == "idx") {
    if (d->train_labels().empty()) d->set_train_labels(absl::StrReplaceAll(d->train(), {{"images-idx3", "labels-idx1"}}));
    if (!d->test().empty() && d->test_labels().empty()) {
      d->set_test_labels(absl::StrReplaceAll(d->test(), {{"images-idx3", "labels-idx1"}}));
    }
  }
  if (d->chunk_bytes() == 0) d->set_chunk_bytes(4 << 20);
  if (d->chunk_examples() == 0) d->set_chunk_examples(5000);
  auto* t = spec->mutable_training();
  if (t->epochs() == 0) t->set_epochs(1);
  if (t->batch_size() == 0) t->set_batch_size(128);
  if (t->consistency().empty()) t->set_consistency("async");
  if (t->lr_decay_per_epoch() == 0) t->set_lr_decay_per_epoch(1.0f);
  if (t->seed() == 0) t->set_seed(1);
  if (spec->optimizer().type().empty()) spec->mutable_optimizer()->set_type("adagrad");
  if (spec->checkpoint().keep() == 0) spec->mutable_checkpoint()->set_keep(3);
}

namespace {
absl::Status Invalid(absl::string_view field, const std::string& value, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, ": ", why));
}

}  // namespace

absl::Status ValidateJobSpec(const JobSpec& spec) {
  if (auto model = worker::Model::Create(worker::ModelConfigFromSpec(spec.model())); !model.ok()) return model.status();
  if (auto opt = server::Optimizer::Create(spec.optimizer()); !opt.ok()) return opt.status();
  if (!(spec.model().l2() >= 0) || !std::isfinite(spec.model().l2())) {
    return Invalid("model.l2", absl::StrCat(spec.model().l2()), "must be a finite number >= 0");
  }
  const auto& d = spec.data();
  if (d.format() != "libsvm" && d.format() != "idx") {
    return Invalid("data.format", absl::StrCat("'", d.format(), "'"), "expected libsvm or idx");
  }
  if (d.train().empty()) return absl::InvalidArgumentError("data.train is required");
  if (d.format() == "idx" && spec.model().num_features() == 0) {
    return absl::InvalidArgumentError("model.num_features is required for idx data (e.g. 784 for 28x28 images)");
  }
  const auto& t = spec.training();
  if (t.epochs() > 100000) return Invalid("training.epochs", absl::StrCat(t.epochs()), "at most 100000");
  if (t.batch_size() > (1u << 20)) return Invalid("training.batch_size", absl::StrCat(t.batch_size()), "at most 1048576");
  if (t.consistency() != "async" && t.consistency() != "ssp" && t.consistency() != "bsp") {
    return Invalid("training.consistency", absl::StrCat("'", t.consistency(), "'"), "expected async, ssp or bsp");
  }
  if (t.consistency() != "ssp" && t.staleness() != 0) {
    return Invalid("training.staleness", absl::StrCat(t.staleness()), "only meaningful with consistency ssp");
  }
  if (t.consistency() == "bsp" && t.num_workers() == 0) {
    return absl::InvalidArgumentError(
        "training.num_workers is required for bsp (chunks are assigned by worker rank so runs are reproducible)");
  }
  if (!(t.lr_decay_per_epoch() > 0 && t.lr_decay_per_epoch() <= 1) || !std::isfinite(t.lr_decay_per_epoch())) {
    return Invalid("training.lr_decay_per_epoch", absl::StrCat(t.lr_decay_per_epoch()), "must be in (0, 1]");
  }
  return absl::OkStatus();
}

std::string JobTablePrefix(uint64_t job_id) { return absl::StrCat("job-", job_id, "/"); }

absl::StatusOr<std::vector<tessera::v1::TableSpec>> JobTables(const JobSpec& spec, uint64_t job_id) {
  ASSIGN_OR_RETURN(auto model, worker::Model::Create(worker::ModelConfigFromSpec(spec.model())));
  tessera::v1::TableSpec table = model->Table();
  table.set_name(JobTablePrefix(job_id) + "params");
  *table.mutable_optimizer() = spec.optimizer();
  return std::vector<tessera::v1::TableSpec>{table};
}

namespace {
absl::StatusOr<std::vector<tessera::v1::Chunk>> Split(const JobSpec& spec, const std::string& path,
                                                      const std::string& labels, absl::string_view field,
                                                      uint64_t* examples) {
  std::vector<data::Chunk> chunks;
  if (spec.data().format() == "idx") {
    auto c = data::SplitIdx(path, labels, spec.data().chunk_examples());
    if (!c.ok()) return Annotate(c.status(), field);
    chunks = std::move(c).value();
    auto n = data::IdxCount(path);
    if (n.ok() && examples != nullptr) *examples = *n;
  } else {
    auto files = data::ExpandGlob(path);
    if (!files.ok()) return Annotate(files.status(), field);
    auto c = data::SplitLibsvm(*files, spec.data().chunk_bytes());
    if (!c.ok()) return Annotate(c.status(), field);
    chunks = std::move(c).value();
  }
  std::vector<tessera::v1::Chunk> out;
  for (const auto& c : chunks) {
    tessera::v1::Chunk pc;
    pc.set_path(c.path);
    pc.set_labels_path(c.labels_path);
    pc.set_begin(c.begin);
    pc.set_end(c.end);
    pc.set_index(static_cast<uint32_t>(out.size()));
    out.push_back(std::move(pc));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " = '", path, "' holds no data"));
  return out;
}
}  // namespace

absl::StatusOr<JobData> SplitJobData(const JobSpec& spec) {
  JobData d;
  ASSIGN_OR_RETURN(d.train, Split(spec, spec.data().train(), spec.data().train_labels(), "data.train", &d.train_examples));
  if (!spec.data().test().empty()) {
    ASSIGN_OR_RETURN(d.test, Split(spec, spec.data().test(), spec.data().test_labels(), "data.test", nullptr));
  }
  return d;
}

}  // namespace tessera::coordinator
