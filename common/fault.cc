#include "common/fault.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>

#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace tessera {
namespace fault_internal {
std::atomic<bool> g_enabled{false};
}  // namespace fault_internal

namespace {

struct Rule {
  enum class Action { kFail, kDropResponse, kDelay, kCrash } action;
  absl::Duration delay;
  int64_t remaining = -1;  // -1: unlimited
  double probability = 1.0;
  int64_t skip = 0;
};

absl::Mutex g_mu;
std::map<std::string, Rule, std::less<>>* g_rules ABSL_GUARDED_BY(g_mu) = nullptr;

absl::StatusOr<Rule> ParseRule(absl::string_view text) {
  Rule r;
  // Suffixes in any order: #count, @probability, +skip.
  std::string action(text);
  for (;;) {
    const size_t pos = action.find_last_of("#@+");
    if (pos == std::string::npos) break;
    const std::string arg = action.substr(pos + 1);
    const char kind = action[pos];
    action.resize(pos);
    bool ok = false;
    if (kind == '#') ok = absl::SimpleAtoi(arg, &r.remaining) && r.remaining >= 0;
    if (kind == '@') ok = absl::SimpleAtod(arg, &r.probability) && r.probability >= 0 && r.probability <= 1;
    if (kind == '+') ok = absl::SimpleAtoi(arg, &r.skip) && r.skip >= 0;
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad '", std::string(1, kind), arg, "' in '", text, "'"));
  }
  std::string arg;
  if (const size_t colon = action.find(':'); colon != std::string::npos) {
    arg = action.substr(colon + 1);
    action.resize(colon);
  }
  if (action == "fail") {
    r.action = Rule::Action::kFail;
  } else if (action == "drop_response") {
    r.action = Rule::Action::kDropResponse;
  } else if (action == "crash") {
    r.action = Rule::Action::kCrash;
  } else if (action == "delay") {
    r.action = Rule::Action::kDelay;
    if (!absl::ParseDuration(arg, &r.delay)) {
      return absl::InvalidArgumentError(absl::StrCat("bad delay '", arg, "' in '", text, "'"));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown fault action '", action, "' (expected fail, drop_response, delay or crash)"));
  }
  return r;
}

}  // namespace

absl::Status FaultHit::status() const {
  return absl::UnavailableError(absl::StrCat("injected fault at ", point_));
}

absl::Status ConfigureFaults(const std::string& spec) {
  auto rules = std::make_unique<std::map<std::string, Rule, std::less<>>>();
  for (absl::string_view entry : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    const size_t eq = entry.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("fault '", entry, "' is not point=action"));
    }
    auto rule = ParseRule(entry.substr(eq + 1));
    if (!rule.ok()) return rule.status();
    (*rules)[std::string(entry.substr(0, eq))] = *rule;
  }
  absl::MutexLock lock(&g_mu);
  delete g_rules;
  g_rules = rules->empty() ? nullptr : rules.release();
  fault_internal::g_enabled.store(g_rules != nullptr);
  return absl::OkStatus();
}

absl::Status ConfigureFaultsFromEnv() {
  const char* env = std::getenv("TESSERA_FAULTS");
  if (env == nullptr || *env == '\0') return absl::OkStatus();
  absl::Status s = ConfigureFaults(env);
  if (s.ok()) std::fprintf(stderr, "tessera: fault injection on: %s\n", env);
  return s;
}

namespace fault_internal {

FaultHit Hit(absl::string_view point) {
  Rule::Action action;
  absl::Duration delay;
  {
    absl::MutexLock lock(&g_mu);
    if (g_rules == nullptr) return FaultHit();
    auto it = g_rules->find(point);
    if (it == g_rules->end()) return FaultHit();
    Rule& r = it->second;
    if (r.skip > 0) {
      --r.skip;
      return FaultHit();
    }
    if (r.remaining == 0) return FaultHit();
    if (r.probability < 1.0 && !absl::Bernoulli(absl::BitGen(), r.probability)) return FaultHit();
    if (r.remaining > 0) --r.remaining;
    action = r.action;
    delay = r.delay;
  }
  switch (action) {
    case Rule::Action::kDelay:
      absl::SleepFor(delay);
      return FaultHit();
    case Rule::Action::kCrash:
      std::fprintf(stderr, "tessera: injected crash at %.*s\n", static_cast<int>(point.size()), point.data());
      std::fflush(stderr);
      ::_exit(137);
    case Rule::Action::kFail:
      return FaultHit(FaultHit::Kind::kFail, point);
    case Rule::Action::kDropResponse:
      return FaultHit(FaultHit::Kind::kDropResponse, point);
  }
  return FaultHit();
}

}  // namespace fault_internal
}  // namespace tessera
