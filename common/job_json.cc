#include "common/job_json.h"

#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::StatusOr<tessera::v1::JobSpec> ParseJobSpecJson(absl::string_view json, absl::string_view source) {
  tessera::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(std::string(json), &spec, options);
  if (!status.ok()) {
    // protobuf quotes the input around the error across several lines; keep it to one.
    std::string why = status.message().ToString();
    for (char& c : why) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a valid job spec: ", why));
  }
  return spec;
}

absl::StatusOr<tessera::v1::JobSpec> ReadJobSpecFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open job spec"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto spec = ParseJobSpecJson(ss.str(), path);
  if (!spec.ok()) return spec;
  std::error_code ec;
  const std::filesystem::path base = std::filesystem::absolute(std::filesystem::path(path), ec).parent_path();
  auto resolve = [&](std::string* p) {
    if (!p->empty() && (*p)[0] != '/') *p = (base / *p).lexically_normal().string();
  };
  auto* d = spec->mutable_data();
  resolve(d->mutable_train());
  resolve(d->mutable_test());
  resolve(d->mutable_train_labels());
  resolve(d->mutable_test_labels());
  resolve(spec->mutable_checkpoint()->mutable_dir());
  return spec;
}

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = pretty;
  options.always_print_primitive_fields = false;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

}  // namespace tessera
