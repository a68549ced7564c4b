// Logging setup for Tessera binaries (spdlog, one line per event, to stderr).
#ifndef TESSERA_COMMON_LOGGING_H_
#define TESSERA_COMMON_LOGGING_H_

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tessera {

// Configures the default spdlog logger: "[time] [level] [component] message" on stderr.
// `level` is one of trace|debug|info|warn|error|off. Not thread-safe: call once from main().
absl::Status SetupLogging(const std::string& component, const std::string& level);

}  // namespace tessera

// Lets spdlog/fmt print absl::string_view (not std::string_view in Debian's Abseil) and absl::Status.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename Ctx>
  auto format(absl::string_view s, Ctx& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};
template <>
struct fmt::formatter<absl::Status> : fmt::formatter<fmt::string_view> {
  template <typename Ctx>
  auto format(const absl::Status& s, Ctx& ctx) const {
    const std::string text = s.ToString();
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};

#endif  // TESSERA_COMMON_LOGGING_H_
