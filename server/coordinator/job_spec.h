// Job admission: defaults, validation with messages naming field and value, the job's tables, and
// the split of its data into lease chunks. Pure apart from reading file headers and sizes.
#ifndef TESSERA_SERVER_COORDINATOR_JOB_SPEC_H_
#define TESSERA_SERVER_COORDINATOR_JOB_SPEC_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tessera/v1/coordinator.pb.h"
#include "tessera/v1/job.pb.h"

namespace tessera::coordinator {

// Fills unset fields with their documented defaults.
void ApplyDefaults(tessera::v1::JobSpec* spec);

// Checks every field; INVALID_ARGUMENT "field = value: reason", or NOT_FOUND for missing data files.
absl::Status ValidateJobSpec(const tessera::v1::JobSpec& spec);

// The tables of job `job_id`: the model's one table, named "job-<id>/params", with the job's optimizer.
absl::StatusOr<std::vector<tessera::v1::TableSpec>> JobTables(const tessera::v1::JobSpec& spec, uint64_t job_id);
std::string JobTablePrefix(uint64_t job_id);

struct JobData {
  std::vector<tessera::v1::Chunk> train;
  std::vector<tessera::v1::Chunk> test;
  uint64_t train_examples = 0;  // 0 when unknown before reading (libsvm)
};
// Splits the training and test data into chunks.
absl::StatusOr<JobData> SplitJobData(const tessera::v1::JobSpec& spec);

}  // namespace tessera::coordinator

#endif  // TESSERA_SERVER_COORDINATOR_JOB_SPEC_H_
