// The deployment files (deploy/docker, deploy/k8s, deploy/systemd, docs/operations.md) against the
// binaries they run. Reads every file there and checks that:
//  - every --flag passed to tessera-coordinator, tessera-server, tessera-worker or tessera exists in
//    that binary's --help (a flag renamed in code fails here);
//  - each daemon's gRPC and metrics port is one number everywhere it is declared: the --port and
//    --metrics_port flags, containerPorts, Services, probes, Prometheus annotations, every
//    --coordinator address, the systemd env file and the Dockerfile's EXPOSE (a port changed in
//    one place only fails here);
//  - every Kubernetes probe is a `grpc:` probe (grpc.health.v1) on the gRPC port;
//  - the Kubernetes and systemd wiring holds: stable server identities, non-root, grace periods
//    above the daemons' 5 s drain, state directories, resources;
//  - the image's build stage uses the project's scripts and its runtime stage installs the package
//    of every shared library the built binaries load.
//
// There is no YAML library here, so manifests are read line by line and keep one regular style:
// block lists, `command:` before `args:`, one flag per list item, two-space indentation. The test
// names the file and line when they don't.
//
// TESSERA_DEPLOY_SOURCE_DIR / TESSERA_DEPLOY_BINARY_DIR point the test at another tree or build
// (used to check that it fails on drift, on a copy).
#include <fnmatch.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/job_json.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------------------------------
// Files, commands, binaries

std::string SourceDir() {
  const char* d = std::getenv("TESSERA_DEPLOY_SOURCE_DIR");
  return d != nullptr && *d != '\0' ? d : TESSERA_SOURCE_DIR;
}
std::string BinaryDir() {
  const char* d = std::getenv("TESSERA_DEPLOY_BINARY_DIR");
  return d != nullptr && *d != '\0' ? d : TESSERA_BINARY_DIR;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Rel(const fs::path& p) { return fs::relative(p, SourceDir()).string(); }

// Files under `dir` (relative to the source dir) whose names satisfy `keep`, sorted.
template <typename Pred>
std::vector<fs::path> FilesUnder(const std::string& dir, Pred keep) {
  std::vector<fs::path> out;
  const fs::path root = fs::path(SourceDir()) / dir;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_regular_file() && keep(e.path())) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult Run(const std::string& command) {
  CommandResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

bool HaveCommand(const std::string& name) { return Run("command -v " + name).exit_code == 0; }

const std::vector<std::string>& TesseraBinaries() {
  static const std::vector<std::string> kBinaries = {"tessera-coordinator", "tessera-server", "tessera-worker",
                                                     "tessera"};
  return kBinaries;
}

// "tessera-server" for "/usr/local/bin/tessera-server" or "tessera-server"; empty otherwise.
std::string TesseraBinary(const std::string& word) {
  const std::string base = fs::path(word).filename().string();
  for (const auto& b : TesseraBinaries()) {
    if (base == b) return b;
  }
  return "";
}

std::string BinaryPath(const std::string& binary) { return BinaryDir() + "/" + binary; }

bool IsExecutable(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & S_IXUSR) != 0;
}

// The flags a binary lists in --help ("  --name (description); default: ...").
const std::set<std::string>& HelpFlags(const std::string& binary) {
  static std::map<std::string, std::set<std::string>> cache;
  auto it = cache.find(binary);
  if (it != cache.end()) return it->second;
  std::set<std::string>& flags = cache[binary];
  const CommandResult r = Run(Quote(BinaryPath(binary)) + " --help");
  static const std::regex kFlag(R"(^\s+--([A-Za-z0-9_]+) \()");
  for (const auto& line : absl::StrSplit(r.output, '\n')) {
    std::smatch m;
    const std::string l(line);
    if (std::regex_search(l, m, kFlag)) flags.insert(m[1]);
  }
  return flags;
}

// Flags absl defines in every binary (--help itself is not listed by --help).
bool BuiltinFlag(const std::string& name) {
  static const std::set<std::string> kBuiltin = {"help",   "helpfull", "helpshort", "helppackage", "version",
                                                 "flagfile", "fromenv", "tryfromenv", "undefok",  "only_check_args"};
  return kBuiltin.count(name) > 0;
}

bool BinaryAcceptsFlag(const std::string& binary, const std::string& name) {
  if (BuiltinFlag(name)) return true;
  const auto& flags = HelpFlags(binary);
  if (flags.count(name)) return true;
  // absl's --noflag for booleans.
  return absl::StartsWith(name, "no") && flags.count(name.substr(2)) > 0;
}

std::string Trim(absl::string_view s) { return std::string(absl::StripAsciiWhitespace(s)); }

std::string Unquote(std::string s) {
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front()) return s.substr(1, s.size() - 2);
  return s;
}

// ------------------------------------------------------------------------------------------------
// What the files declare

struct FlagUse {
  std::string where;  // file:line
  std::string binary;
  std::string name;
  std::string value;  // after variable substitution where the file has variables
};

// "--name=value" or "--name" -> FlagUse; nullopt for other words.
std::optional<FlagUse> ParseFlag(const std::string& word, const std::string& binary, const std::string& where) {
  if (!absl::StartsWith(word, "--") || word.size() < 3) return std::nullopt;
  FlagUse f;
  f.where = where;
  f.binary = binary;
  const size_t eq = word.find('=');
  f.name = word.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
  if (eq != std::string::npos) f.value = word.substr(eq + 1);
  return f;
}

// One declaration of a port: key is "coordinator/grpc", "server/metrics", ...
struct PortDecl {
  std::string key;
  int port = 0;
  std::string where;
};

// The role whose ports a Tessera flag declares; empty for binaries without ports.
std::string RoleOfBinary(const std::string& binary) {
  if (binary == "tessera-coordinator") return "coordinator";
  if (binary == "tessera-server") return "server";
  return "";
}

// Port declarations made by flags: --port, --metrics_port and the port of --coordinator=HOST:PORT.
void PortsFromFlag(const FlagUse& f, std::vector<PortDecl>* out, std::vector<std::string>* errors) {
  const std::string role = RoleOfBinary(f.binary);
  auto add = [&](const std::string& key, const std::string& text) {
    int port = 0;
    if (!absl::SimpleAtoi(text, &port) || port <= 0 || port > 65535) {
      errors->push_back(absl::StrCat(f.where, ": --", f.name, "=", f.value, " is not a fixed port"));
      return;
    }
    out->push_back({key, port, absl::StrCat(f.where, " (", f.binary, " --", f.name, ")")});
  };
  if (!role.empty() && f.name == "port") add(role + "/grpc", f.value);
  if (!role.empty() && f.name == "metrics_port") add(role + "/metrics", f.value);
  if (f.name == "coordinator") {
    const size_t colon = f.value.rfind(':');
    if (colon == std::string::npos) {
      errors->push_back(absl::StrCat(f.where, ": --coordinator=", f.value, " has no port"));
    } else {
      add("coordinator/grpc", f.value.substr(colon + 1));
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Kubernetes manifests, line by line

struct Line {
  int number = 0;
  int indent = 0;
  std::string raw;
  std::string text;     // without indentation and trailing comment; empty for blank and comment lines
  std::string comment;  // a whole-line comment, after '#'
  bool item = false;    // text starts with "- "
};

std::string StripInlineComment(const std::string& s) {
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quote != 0) {
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '#' && i > 0 && s[i - 1] == ' ') {
      return Trim(s.substr(0, i));
    }
  }
  return Trim(s);
}

// "key: value" or "- key: value" -> key and unquoted value; false for other lines.
bool KeyValue(const std::string& text, std::string* key, std::string* value) {
  std::string t = absl::StartsWith(text, "- ") ? text.substr(2) : text;
  const size_t c = t.find(':');
  if (c == std::string::npos || c == 0) return false;
  if (c + 1 < t.size() && t[c + 1] != ' ') return false;
  const std::string k = t.substr(0, c);
  if (k.find(' ') != std::string::npos || k[0] == '-' || k[0] == '"' || k[0] == '\'') return false;
  *key = k;
  *value = Unquote(Trim(t.substr(c + 1)));
  return true;
}

struct YamlDoc {
  std::string file;
  std::vector<Line> lines;
  std::string kind, name, component;

  std::string Where(size_t i) const { return absl::StrCat(file, ":", lines[i].number); }
  std::string Key(size_t i) const {
    std::string k, v;
    return KeyValue(lines[i].text, &k, &v) ? k : "";
  }
  std::string Value(size_t i) const {
    std::string k, v;
    return KeyValue(lines[i].text, &k, &v) ? v : "";
  }
  bool Content(size_t i) const { return !lines[i].text.empty(); }
  // Indentation of the keys of the mapping line i belongs to.
  int KeyIndent(size_t i) const { return lines[i].indent + (lines[i].item ? 2 : 0); }
  // Lines nested under line i: [i + 1, end).
  size_t BlockEnd(size_t i) const {
    size_t j = i + 1;
    for (; j < lines.size(); ++j) {
      if (Content(j) && lines[j].indent <= lines[i].indent) break;
    }
    return j;
  }
  // The list item (or mapping) holding line i: its first line and end.
  std::pair<size_t, size_t> ItemRange(size_t i) const {
    const int k = KeyIndent(i);
    size_t begin = i;
    if (!lines[i].item) {
      for (size_t j = i; j-- > 0;) {
        if (!Content(j)) continue;
        if (lines[j].indent == k - 2 && lines[j].item) {
          begin = j;
          break;
        }
        if (lines[j].indent < k) break;
        begin = j;
      }
    }
    size_t end = i + 1;
    for (; end < lines.size(); ++end) {
      if (!Content(end)) continue;
      if (lines[end].indent < k) break;
      if (lines[end].indent == k - 2 && lines[end].item) break;
    }
    return {begin, end};
  }
  // The value of `field` in the item holding line i.
  std::optional<std::string> ItemField(size_t i, const std::string& field) const {
    const auto [b, e] = ItemRange(i);
    const int k = KeyIndent(i);
    for (size_t j = b; j < e; ++j) {
      if (Content(j) && KeyIndent(j) == k && (lines[j].indent == k || lines[j].item) && Key(j) == field) return Value(j);
    }
    return std::nullopt;
  }
  // First value of a key anywhere in the document.
  std::optional<std::string> Find(const std::string& key) const {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (Content(i) && Key(i) == key) return Value(i);
    }
    return std::nullopt;
  }
};

std::vector<YamlDoc> SplitYaml(const fs::path& path) {
  std::vector<YamlDoc> docs(1);
  docs.back().file = Rel(path);
  int number = 0;
  for (const auto& piece : absl::StrSplit(ReadFile(path.string()), '\n')) {
    ++number;
    std::string raw(piece);
    if (!raw.empty() && raw.back() == '\r') raw.pop_back();
    if (raw == "---") {
      docs.emplace_back();
      docs.back().file = Rel(path);
      continue;
    }
    Line l;
    l.number = number;
    l.raw = raw;
    const size_t first = raw.find_first_not_of(' ');
    if (first != std::string::npos) {
      l.indent = static_cast<int>(first);
      const std::string rest = raw.substr(first);
      if (rest[0] == '#') {
        l.comment = Trim(rest.substr(1));
      } else {
        l.text = StripInlineComment(rest);
        l.item = absl::StartsWith(l.text, "- ") || l.text == "-";
      }
    }
    docs.back().lines.push_back(std::move(l));
  }
  std::vector<YamlDoc> out;
  for (auto& d : docs) {
    for (size_t i = 0; i < d.lines.size(); ++i) {
      if (!d.Content(i)) continue;
      const std::string k = d.Key(i);
      if (d.lines[i].indent == 0 && k == "kind") d.kind = d.Value(i);
      if (d.lines[i].indent == 2 && k == "name" && i > 0 && d.name.empty()) d.name = d.Value(i);
      if (k == "app.kubernetes.io/component" && d.component.empty()) d.component = d.Value(i);
    }
    if (!d.kind.empty()) out.push_back(std::move(d));
  }
  return out;
}

bool IsManifest(const fs::path& p) {
  const std::string ext = p.extension().string();
  return (ext == ".yaml" || ext == ".yml") && p.filename() != "kustomization.yaml";
}

std::vector<YamlDoc> Manifests() {
  std::vector<YamlDoc> docs;
  for (const auto& p : FilesUnder("deploy/k8s", IsManifest)) {
    for (auto& d : SplitYaml(p)) docs.push_back(std::move(d));
  }
  return docs;
}

struct DocFlags {
  std::vector<FlagUse> flags;
  std::vector<FlagUse> commented;  // "# - --flag=..." examples, reported when not (yet) accepted
  std::set<std::string> binaries;
};

// The Tessera flags of a manifest: list items of `command:` / `args:` after a Tessera binary.
DocFlags FlagsOf(const YamlDoc& d, std::vector<std::string>* errors) {
  DocFlags out;
  std::string binary;  // the container's binary: a Tessera one, "-" for another program, "" before any
  std::string list;    // "command" or "args" while inside that list
  int list_indent = -1;
  bool first_command_item = false;
  static const std::regex kLooseFlag(R"((^|[\s"'=\[,])--[a-z_]+=)");
  for (size_t i = 0; i < d.lines.size(); ++i) {
    const Line& l = d.lines[i];
    if (!l.comment.empty()) {
      const std::string c = l.comment;
      if (absl::StartsWith(c, "- --") && !binary.empty() && binary != "-") {
        if (auto f = ParseFlag(Trim(c.substr(2)), binary, d.Where(i))) out.commented.push_back(*f);
      }
      continue;
    }
    if (l.text.empty()) continue;
    const std::string key = d.Key(i);
    if (!l.item && (key == "command" || key == "args")) {
      if (!d.Value(i).empty()) {
        errors->push_back(absl::StrCat(d.Where(i), ": write `", key, ":` as a block list, one item per line"));
      }
      list = key;
      list_indent = l.indent;
      if (key == "command") {
        binary = "-";
        first_command_item = true;
      }
      continue;
    }
    if (!list.empty() && l.item && l.indent >= list_indent) {
      const std::string word = Unquote(Trim(l.text.substr(1)));
      if (list == "command" && first_command_item) {
        first_command_item = false;
        const std::string b = TesseraBinary(word);
        binary = b.empty() ? "-" : b;
        if (!b.empty()) out.binaries.insert(b);
        continue;
      }
      if (absl::StartsWith(word, "--")) {
        if (binary.empty()) {
          errors->push_back(absl::StrCat(d.Where(i), ": flag ", word, " with no `command:` before it"));
        } else if (binary != "-") {
          out.flags.push_back(*ParseFlag(word, binary, d.Where(i)));
        }
      }
      continue;
    }
    list.clear();
    if (std::regex_search(l.text, kLooseFlag)) {
      errors->push_back(absl::StrCat(d.Where(i), ": a flag outside a `command:`/`args:` list (the test cannot ",
                                     "tell which binary gets it): ", l.text));
    }
  }
  return out;
}

std::string RoleOfDoc(const YamlDoc& d) {
  if (d.component == "coordinator" || d.component == "server") return d.component;
  return "";
}

struct Probe {
  std::string where;
  std::string role;
  std::string kind;     // livenessProbe, ...
  std::string handler;  // grpc, httpGet, ...
  int port = 0;
};

std::vector<Probe> ProbesOf(const YamlDoc& d) {
  std::vector<Probe> out;
  for (size_t i = 0; i < d.lines.size(); ++i) {
    if (!d.Content(i)) continue;
    const std::string k = d.Key(i);
    if (k != "livenessProbe" && k != "readinessProbe" && k != "startupProbe") continue;
    Probe p;
    p.where = d.Where(i);
    p.role = RoleOfDoc(d);
    p.kind = k;
    const size_t end = d.BlockEnd(i);
    for (size_t j = i + 1; j < end; ++j) {
      if (!d.Content(j) || d.lines[j].indent != d.KeyIndent(i) + 2) continue;
      const std::string h = d.Key(j);
      if (h == "grpc" || h == "httpGet" || h == "tcpSocket" || h == "exec") {
        p.handler = h;
        for (size_t q = j + 1; q < d.BlockEnd(j); ++q) {
          if (d.Content(q) && d.Key(q) == "port") (void)absl::SimpleAtoi(d.Value(q), &p.port);
        }
      }
    }
    out.push_back(p);
  }
  return out;
}

// Ports a manifest declares: containerPorts, Service ports, grpc probes, scrape annotations.
std::vector<PortDecl> PortsOf(const YamlDoc& d, std::vector<std::string>* errors) {
  std::vector<PortDecl> out;
  const std::string role = RoleOfDoc(d);
  auto add = [&](size_t i, const std::string& name, const std::string& value, const std::string& what) {
    int port = 0;
    if (!absl::SimpleAtoi(value, &port)) {
      errors->push_back(absl::StrCat(d.Where(i), ": ", what, " '", value, "' is not a number"));
      return;
    }
    if (role.empty()) {
      errors->push_back(absl::StrCat(d.Where(i), ": ", what, " in a document whose app.kubernetes.io/component is '",
                                     d.component, "', not coordinator or server"));
      return;
    }
    if (name != "grpc" && name != "metrics") {
      errors->push_back(absl::StrCat(d.Where(i), ": ", what, " named '", name, "'; name it grpc or metrics"));
      return;
    }
    out.push_back({role + "/" + name, port, absl::StrCat(d.Where(i), " (", what, ")")});
  };
  for (size_t i = 0; i < d.lines.size(); ++i) {
    if (!d.Content(i)) continue;
    const std::string k = d.Key(i);
    if (k == "containerPort") {
      add(i, d.ItemField(i, "name").value_or(""), d.Value(i), "containerPort");
    } else if (k == "port" && d.kind == "Service") {
      const std::string name = d.ItemField(i, "name").value_or("");
      add(i, name, d.Value(i), "Service port");
      const std::string target = d.ItemField(i, "targetPort").value_or(d.Value(i));
      int n = 0;
      if (absl::SimpleAtoi(target, &n)) {
        add(i, name, target, "Service targetPort");
      } else if (target != name) {
        errors->push_back(absl::StrCat(d.Where(i), ": Service port '", name, "' targets the container port named '",
                                       target, "'"));
      }
    } else if (k == "prometheus.io/port") {
      add(i, "metrics", d.Value(i), "prometheus.io/port annotation");
    }
  }
  for (const auto& p : ProbesOf(d)) {
    if (p.handler == "grpc" && !p.role.empty()) out.push_back({p.role + "/grpc", p.port, p.where + " (" + p.kind + ")"});
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// systemd units and the env file

struct Setting {
  std::string value;
  std::string where;
};

struct Unit {
  std::string file;
  std::multimap<std::string, Setting> settings;
  std::string Get(const std::string& key) const {
    auto it = settings.find(key);
    return it == settings.end() ? "" : it->second.value;
  }
  bool Has(const std::string& key) const { return settings.count(key) > 0; }
};

// Logical lines (continuations joined) with the number of their first physical line.
std::vector<std::pair<int, std::string>> LogicalLines(const std::string& text, bool skip_comment_lines_in_continuation) {
  std::vector<std::pair<int, std::string>> out;
  std::string cur;
  int start = 0, number = 0;
  for (const auto& piece : absl::StrSplit(text, '\n')) {
    ++number;
    std::string l(piece);
    if (!l.empty() && l.back() == '\r') l.pop_back();
    const std::string t = Trim(l);
    if (!cur.empty() && skip_comment_lines_in_continuation && absl::StartsWith(t, "#")) continue;
    if (cur.empty()) start = number;
    if (!t.empty() && t.back() == '\\') {
      cur += t.substr(0, t.size() - 1) + " ";
      continue;
    }
    cur += t;
    out.push_back({start, cur});
    cur.clear();
  }
  if (!cur.empty()) out.push_back({start, cur});
  return out;
}

Unit ParseUnit(const fs::path& path) {
  Unit u;
  u.file = Rel(path);
  for (const auto& [n, l] : LogicalLines(ReadFile(path.string()), false)) {
    if (l.empty() || l[0] == '#' || l[0] == ';' || l[0] == '[') continue;
    const size_t eq = l.find('=');
    if (eq == std::string::npos) continue;
    u.settings.insert({Trim(l.substr(0, eq)), {Trim(l.substr(eq + 1)), absl::StrCat(u.file, ":", n)}});
  }
  return u;
}

struct EnvFile {
  std::string file;
  std::map<std::string, std::string> vars;
  std::map<std::string, std::string> commented;  // "# VAR=value" examples
};

EnvFile ParseEnvFile(const fs::path& path) {
  EnvFile e;
  e.file = Rel(path);
  static const std::regex kAssign(R"(^#?\s*([A-Z_][A-Z0-9_]*)=(.*)$)");
  for (const auto& piece : absl::StrSplit(ReadFile(path.string()), '\n')) {
    const std::string l = Trim(piece);
    std::smatch m;
    if (!std::regex_match(l, m, kAssign)) continue;
    (l[0] == '#' ? e.commented : e.vars)[m[1]] = Unquote(Trim(m[2].str()));
  }
  return e;
}

// Replaces ${VAR} (and a whole-word $VAR) from `env`; records unknown variables.
std::string Substitute(const std::string& word, const std::map<std::string, std::string>& env,
                       std::set<std::string>* unknown) {
  static const std::regex kVar(R"(\$\{([A-Za-z_][A-Za-z0-9_]*)\}|^\$([A-Za-z_][A-Za-z0-9_]*)$)");
  std::string out;
  auto begin = std::sregex_iterator(word.begin(), word.end(), kVar);
  size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const std::smatch& m = *it;
    out += word.substr(last, static_cast<size_t>(m.position(0)) - last);
    const std::string name = m[1].matched ? m[1].str() : m[2].str();
    auto v = env.find(name);
    if (v == env.end()) {
      unknown->insert(name);
    } else {
      out += v->second;
    }
    last = static_cast<size_t>(m.position(0) + m.length(0));
  }
  return out + word.substr(last);
}

struct SystemdDeploy {
  std::vector<Unit> units;
  EnvFile env;
  std::vector<FlagUse> flags;
  std::vector<FlagUse> commented;
  std::map<std::string, std::string> exec_binary;  // unit file -> absolute ExecStart path
  std::vector<std::string> errors;
};

SystemdDeploy LoadSystemd() {
  SystemdDeploy s;
  const fs::path env_path = fs::path(SourceDir()) / "deploy/systemd/tessera.env";
  if (fs::exists(env_path)) s.env = ParseEnvFile(env_path);
  for (const auto& p : FilesUnder("deploy/systemd", [](const fs::path& p) { return p.extension() == ".service"; })) {
    Unit u = ParseUnit(p);
    std::map<std::string, std::string> env = s.env.vars;
    for (auto [it, end] = u.settings.equal_range("EnvironmentFile"); it != end; ++it) {
      const std::string v = it->second.value;
      if (absl::StartsWith(v, "-")) continue;  // optional, per-instance
      if (!fs::exists(fs::path(SourceDir()) / "deploy/systemd" / fs::path(v).filename())) {
        s.errors.push_back(absl::StrCat(it->second.where, ": EnvironmentFile ", v, " is not shipped in deploy/systemd"));
      }
    }
    for (auto [it, end] = u.settings.equal_range("Environment"); it != end; ++it) {
      for (const auto& kv : absl::StrSplit(it->second.value, ' ', absl::SkipEmpty())) {
        std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
        env[p.first] = Unquote(p.second);
      }
    }
    for (const char* key : {"ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop"}) {
      for (auto [it, end] = u.settings.equal_range(key); it != end; ++it) {
        std::vector<std::string> words = absl::StrSplit(it->second.value, ' ', absl::SkipEmpty());
        if (words.empty()) continue;
        std::string exe(absl::StripLeadingAsciiWhitespace(words[0]));
        while (!exe.empty() && std::string("-@:+!").find(exe[0]) != std::string::npos) exe.erase(0, 1);
        const std::string binary = TesseraBinary(exe);
        if (std::string(key) == "ExecStart") s.exec_binary[u.file] = exe;
        if (binary.empty()) continue;
        std::set<std::string> unknown;
        for (size_t w = 1; w < words.size(); ++w) {
          const std::string expanded = Substitute(words[w], env, &unknown);
          for (const auto& word : absl::StrSplit(expanded, ' ', absl::SkipEmpty())) {
            if (auto f = ParseFlag(std::string(word), binary, it->second.where)) s.flags.push_back(*f);
          }
          // Commented examples in the env file for the variables this command uses.
          static const std::regex kRef(R"(\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?)");
          for (auto r = std::sregex_iterator(words[w].begin(), words[w].end(), kRef); r != std::sregex_iterator(); ++r) {
            auto c = s.env.commented.find((*r)[1]);
            if (c == s.env.commented.end()) continue;
            for (const auto& word : absl::StrSplit(c->second, ' ', absl::SkipEmpty())) {
              if (auto f = ParseFlag(std::string(word), binary, s.env.file + " (comment)")) s.commented.push_back(*f);
            }
          }
        }
        for (const auto& v : unknown) {
          s.errors.push_back(absl::StrCat(it->second.where, ": ", key, " uses $", v, ", which ", s.env.file,
                                          " does not define"));
        }
      }
    }
    s.units.push_back(std::move(u));
  }
  return s;
}

// ------------------------------------------------------------------------------------------------
// Dockerfile

struct Instruction {
  int line = 0;
  std::string op;    // FROM, RUN, COPY, ... (upper case)
  std::string args;  // the rest, continuations joined
  int stage = -1;    // index of the FROM it follows
};

std::string DockerfilePath() { return SourceDir() + "/deploy/docker/Dockerfile"; }

std::vector<Instruction> ParseDockerfile() {
  std::vector<Instruction> out;
  int stage = -1;
  for (const auto& [n, l] : LogicalLines(ReadFile(DockerfilePath()), true)) {
    if (l.empty() || l[0] == '#') continue;
    Instruction ins;
    ins.line = n;
    const size_t sp = l.find_first_of(" \t");
    ins.op = absl::AsciiStrToUpper(l.substr(0, sp));
    ins.args = sp == std::string::npos ? "" : Trim(l.substr(sp));
    if (ins.op == "FROM") ++stage;
    ins.stage = stage;
    out.push_back(ins);
  }
  return out;
}

std::string DockerWhere(const Instruction& i) { return absl::StrCat("deploy/docker/Dockerfile:", i.line); }

// Packages named by the runtime stage's `apt-get install` (words after the options).
std::vector<std::string> RuntimePackages(const std::vector<Instruction>& ins, int stage) {
  std::vector<std::string> out;
  static const std::regex kPackage(R"(^[a-z0-9][a-z0-9.+-]+$)");
  for (const auto& i : ins) {
    if (i.stage != stage || i.op != "RUN") continue;
    for (const auto& cmd : absl::StrSplit(i.args, "&&")) {
      std::vector<std::string> words = absl::StrSplit(cmd, ' ', absl::SkipEmpty());
      auto it = std::find(words.begin(), words.end(), "install");
      if (it == words.begin() || it == words.end() || *(it - 1) != "apt-get") continue;
      for (++it; it != words.end(); ++it) {
        if (absl::StartsWith(*it, "-")) continue;
        if (std::regex_match(*it, kPackage)) out.push_back(*it);
      }
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// The whole deployment, for the cross-file checks

struct Deployment {
  std::vector<YamlDoc> docs;
  std::vector<FlagUse> flags;      // every flag passed to a Tessera binary, in any deploy file
  std::vector<FlagUse> commented;  // commented-out examples
  std::vector<PortDecl> ports;
  std::vector<std::string> errors;  // style or parse problems
  SystemdDeploy systemd;
  std::vector<Instruction> docker;
};

Deployment Load() {
  Deployment d;
  d.docs = Manifests();
  for (const auto& doc : d.docs) {
    DocFlags f = FlagsOf(doc, &d.errors);
    for (const auto& b : f.binaries) {
      if (!doc.component.empty() && b != "tessera" && b != "tessera-" + doc.component) {
        d.errors.push_back(absl::StrCat(doc.file, ": ", doc.kind, " ", doc.name, " runs ", b,
                                        " but is labelled app.kubernetes.io/component: ", doc.component));
      }
    }
    d.flags.insert(d.flags.end(), f.flags.begin(), f.flags.end());
    d.commented.insert(d.commented.end(), f.commented.begin(), f.commented.end());
    for (const auto& p : PortsOf(doc, &d.errors)) d.ports.push_back(p);
  }
  d.systemd = LoadSystemd();
  d.flags.insert(d.flags.end(), d.systemd.flags.begin(), d.systemd.flags.end());
  d.commented.insert(d.commented.end(), d.systemd.commented.begin(), d.systemd.commented.end());
  d.errors.insert(d.errors.end(), d.systemd.errors.begin(), d.systemd.errors.end());

  d.docker = ParseDockerfile();
  for (const auto& i : d.docker) {
    if (i.op != "CMD" && i.op != "ENTRYPOINT") continue;
    if (!absl::StartsWith(i.args, "[")) {
      d.errors.push_back(DockerWhere(i) + ": use the exec form [\"binary\", \"--flag\"]");
      continue;
    }
    static const std::regex kWord(R"re("([^"]*)")re");
    std::vector<std::string> words;
    for (auto it = std::sregex_iterator(i.args.begin(), i.args.end(), kWord); it != std::sregex_iterator(); ++it) {
      words.push_back((*it)[1]);
    }
    if (words.empty() || TesseraBinary(words[0]).empty()) continue;
    for (size_t w = 1; w < words.size(); ++w) {
      if (auto f = ParseFlag(words[w], TesseraBinary(words[0]), DockerWhere(i))) d.flags.push_back(*f);
    }
  }
  for (const auto& f : d.flags) PortsFromFlag(f, &d.ports, &d.errors);
  return d;
}

// ------------------------------------------------------------------------------------------------
// Tests

TEST(DeployFilesTest, FilesAreThereAndReadable) {
  for (const auto& b : TesseraBinaries()) {
    EXPECT_TRUE(IsExecutable(BinaryPath(b))) << BinaryPath(b) << " is not built";
    EXPECT_FALSE(HelpFlags(b).empty()) << b << " --help lists no flags";
  }
  EXPECT_TRUE(fs::exists(DockerfilePath()));
  EXPECT_TRUE(fs::exists(SourceDir() + "/deploy/k8s/kustomization.yaml"));
  EXPECT_TRUE(fs::exists(SourceDir() + "/deploy/systemd/tessera.env"));
  EXPECT_TRUE(fs::exists(SourceDir() + "/docs/operations.md"));
  const Deployment d = Load();
  EXPECT_GE(d.docs.size(), 8u) << "Kubernetes documents found under deploy/k8s";
  EXPECT_GE(d.systemd.units.size(), 2u);
  std::set<std::string> seen;
  for (const auto& f : d.flags) seen.insert(f.binary);
  for (const auto& b : TesseraBinaries()) EXPECT_TRUE(seen.count(b)) << "no deploy file passes flags to " << b;
  for (const auto& e : d.errors) ADD_FAILURE() << e;
}

TEST(DeployFilesTest, EveryFlagExistsInItsBinarysHelp) {
  const Deployment d = Load();
  ASSERT_FALSE(d.flags.empty());
  for (const auto& f : d.flags) {
    EXPECT_TRUE(BinaryAcceptsFlag(f.binary, f.name))
        << f.where << ": " << f.binary << " has no flag --" << f.name << " (its --help lists: --"
        << absl::StrJoin(HelpFlags(f.binary), ", --") << ")";
  }
  // Commented-out examples (e.g. the security flags) are not required yet; say which are missing.
  std::set<std::string> noted;
  for (const auto& f : d.commented) {
    if (!BinaryAcceptsFlag(f.binary, f.name) && noted.insert(f.binary + " --" + f.name).second) {
      std::printf("note: commented example %s --%s (%s) is not accepted by this build\n", f.binary.c_str(),
                  f.name.c_str(), f.where.c_str());
    }
  }
}

TEST(DeployFilesTest, EachPortIsTheSameEverywhere) {
  const Deployment d = Load();
  std::map<std::string, std::vector<PortDecl>> by_key;
  for (const auto& p : d.ports) by_key[p.key].push_back(p);
  for (const char* key : {"coordinator/grpc", "coordinator/metrics", "server/grpc", "server/metrics"}) {
    EXPECT_TRUE(by_key.count(key)) << "no deploy file declares the " << key << " port";
  }
  std::set<int> all;
  for (const auto& [key, decls] : by_key) {
    std::map<int, std::vector<std::string>> values;
    for (const auto& p : decls) values[p.port].push_back(p.where);
    if (values.size() > 1) {
      std::string msg = absl::StrCat("the ", key, " port differs between files:");
      for (const auto& [port, wheres] : values) absl::StrAppend(&msg, "\n  ", port, ": ", absl::StrJoin(wheres, "; "));
      ADD_FAILURE() << msg;
    }
    all.insert(values.begin()->first);
  }
  // Different roles, different ports (they share hosts under systemd).
  EXPECT_EQ(all.size(), by_key.size()) << "two roles share a port";

  // The image declares exactly these ports.
  std::set<int> exposed;
  for (const auto& i : d.docker) {
    if (i.op != "EXPOSE") continue;
    for (const auto& w : absl::StrSplit(i.args, ' ', absl::SkipEmpty())) {
      int p = 0;
      EXPECT_TRUE(absl::SimpleAtoi(absl::StripSuffix(w, "/tcp"), &p)) << DockerWhere(i) << ": EXPOSE " << w;
      exposed.insert(p);
    }
  }
  EXPECT_EQ(exposed, all) << "deploy/docker/Dockerfile EXPOSE {" << absl::StrJoin(exposed, " ")
                          << "} vs the ports the manifests and units use {" << absl::StrJoin(all, " ") << "}";

  // Every coordinator address in the manifests and the env file uses the coordinator's port.
  static const std::regex kAddress(R"(tessera-coordinator(\.[a-z0-9.-]+)?:(\d+))");
  std::vector<std::pair<std::string, std::string>> texts;  // where, text
  for (const auto& doc : d.docs) {
    for (size_t i = 0; i < doc.lines.size(); ++i) texts.push_back({doc.Where(i), doc.lines[i].text});
  }
  for (const auto& [k, v] : d.systemd.env.vars) texts.push_back({d.systemd.env.file + " " + k, k + "=" + v});
  const int coordinator = by_key.count("coordinator/grpc") ? by_key["coordinator/grpc"][0].port : 0;
  for (const auto& [where, text] : texts) {
    for (auto it = std::sregex_iterator(text.begin(), text.end(), kAddress); it != std::sregex_iterator(); ++it) {
      EXPECT_EQ(std::stoi((*it)[2]), coordinator) << where << ": " << text;
    }
  }
  if (d.systemd.env.vars.count("TESSERA_COORDINATOR")) {
    const std::string a = d.systemd.env.vars.at("TESSERA_COORDINATOR");
    EXPECT_TRUE(absl::EndsWith(a, absl::StrCat(":", coordinator)))
        << d.systemd.env.file << ": TESSERA_COORDINATOR=" << a << " vs the coordinator port " << coordinator;
  }
}

TEST(DeployFilesTest, ProbesAreGrpcHealthChecksOnTheGrpcPort) {
  const Deployment d = Load();
  std::map<std::string, int> grpc_port;
  for (const auto& f : d.flags) {
    if (f.name == "port" && !RoleOfBinary(f.binary).empty() && f.where.rfind("deploy/k8s", 0) == 0) {
      grpc_port[RoleOfBinary(f.binary)] = std::atoi(f.value.c_str());
    }
  }
  int probes = 0;
  for (const auto& doc : d.docs) {
    std::set<std::string> kinds;
    for (const auto& p : ProbesOf(doc)) {
      ++probes;
      kinds.insert(p.kind);
      // Kubelet's grpc probe calls grpc.health.v1.Health/Check, which the daemons serve.
      EXPECT_EQ(p.handler, "grpc") << p.where << ": " << p.kind << " must be a `grpc:` probe (grpc.health.v1)";
      ASSERT_FALSE(p.role.empty()) << p.where << ": probe outside a coordinator or server";
      EXPECT_EQ(p.port, grpc_port[p.role]) << p.where << ": " << p.kind << " port vs " << p.role << " --port";
    }
    std::vector<std::string> ignored;  // reported by FilesAreThereAndReadable
    const DocFlags f = FlagsOf(doc, &ignored);
    for (const auto& b : f.binaries) {
      if (RoleOfBinary(b).empty()) continue;
      EXPECT_TRUE(kinds.count("livenessProbe")) << doc.file << ": " << doc.name << " has no livenessProbe";
      EXPECT_TRUE(kinds.count("readinessProbe")) << doc.file << ": " << doc.name << " has no readinessProbe";
    }
  }
  EXPECT_GE(probes, 4);
}


// ------------------------------------------------------------------------------------------------
// Kubernetes wiring

// Claim names of a StatefulSet's volumeClaimTemplates.
std::set<std::string> ClaimTemplates(const YamlDoc& doc) {
  std::set<std::string> out;
  for (size_t i = 0; i < doc.lines.size(); ++i) {
    if (!doc.Content(i) || doc.Key(i) != "volumeClaimTemplates") continue;
    for (size_t j = i + 1; j < doc.BlockEnd(i); ++j) {
      if (!doc.Content(j) || doc.Key(j) != "metadata") continue;
      for (size_t q = j + 1; q < doc.BlockEnd(j); ++q) {
        if (doc.Content(q) && doc.Key(q) == "name") {
          out.insert(doc.Value(q));
          break;
        }
      }
    }
  }
  return out;
}

// volumeMounts of a document: volume name -> mountPath.
std::multimap<std::string, std::string> Mounts(const YamlDoc& doc) {
  std::multimap<std::string, std::string> out;
  for (size_t i = 0; i < doc.lines.size(); ++i) {
    if (doc.Content(i) && doc.Key(i) == "mountPath") out.insert({doc.ItemField(i, "name").value_or(""), doc.Value(i)});
  }
  return out;
}

bool UnderPath(const std::string& path, const std::string& dir) {
  return path == dir || absl::StartsWith(path, absl::StrCat(absl::StripSuffix(dir, "/"), "/"));
}

std::optional<std::string> FlagValue(const DocFlags& f, const std::string& name) {
  for (const auto& u : f.flags) {
    if (u.name == name) return u.value;
  }
  return std::nullopt;
}

// Defines env var `name` in the document (a `- name:` item with value or valueFrom).
bool DefinesEnv(const YamlDoc& doc, const std::string& name) {
  for (size_t i = 0; i < doc.lines.size(); ++i) {
    if (doc.Content(i) && doc.lines[i].item && doc.Key(i) == "name" && doc.Value(i) == name &&
        (doc.ItemField(i, "value") || doc.ItemField(i, "valueFrom"))) {
      return true;
    }
  }
  return false;
}

int IntOr(const std::optional<std::string>& v, int fallback) {
  int n = fallback;
  if (v) (void)absl::SimpleAtoi(*v, &n);
  return n;
}

TEST(DeployFilesTest, KubernetesWorkloadsAreWiredTogether) {
  const Deployment d = Load();
  std::map<std::string, const YamlDoc*> by_name;  // "Kind/name"
  for (const auto& doc : d.docs) by_name[doc.kind + "/" + doc.name] = &doc;
  std::set<std::string> runs;
  for (const auto& doc : d.docs) {
    const std::string id = absl::StrCat(doc.file, ": ", doc.kind, "/", doc.name);
    std::vector<std::string> ignored;
    const DocFlags f = FlagsOf(doc, &ignored);
    runs.insert(f.binaries.begin(), f.binaries.end());
    const bool daemon = f.binaries.count("tessera-coordinator") || f.binaries.count("tessera-server");

    if (doc.Find("containers")) {
      EXPECT_EQ(doc.Find("runAsNonRoot").value_or(""), "true") << id << ": set securityContext.runAsNonRoot";
      for (size_t i = 0; i < doc.lines.size(); ++i) {
        if (!doc.Content(i)) continue;
        if (doc.Key(i) == "runAsUser") {
          EXPECT_EQ(doc.Value(i), "10001") << doc.Where(i) << ": the image's user";
        }
        if (doc.Key(i) != "image") continue;
        // Per container: resources.requests and .limits, no privilege escalation.
        const auto [b, e] = doc.ItemRange(i);
        bool requests = false, limits = false, escalation_off = false;
        for (size_t j = b; j < e; ++j) {
          if (!doc.Content(j)) continue;
          if (doc.Key(j) == "resources" && doc.KeyIndent(j) == doc.KeyIndent(i)) {
            for (size_t q = j + 1; q < doc.BlockEnd(j); ++q) {
              if (doc.Content(q) && doc.Key(q) == "requests") requests = true;
              if (doc.Content(q) && doc.Key(q) == "limits") limits = true;
            }
          }
          if (doc.Key(j) == "allowPrivilegeEscalation" && doc.Value(j) == "false") escalation_off = true;
        }
        EXPECT_TRUE(requests && limits) << doc.Where(i) << ": container needs resources.requests and .limits";
        EXPECT_TRUE(escalation_off) << doc.Where(i) << ": set allowPrivilegeEscalation: false";
      }
    }

    // Every $(VAR) in a flag is defined for the container.
    static const std::regex kRef(R"(\$\(([A-Za-z_][A-Za-z0-9_]*)\))");
    for (const auto& u : f.flags) {
      for (auto it = std::sregex_iterator(u.value.begin(), u.value.end(), kRef); it != std::sregex_iterator(); ++it) {
        const std::string var = (*it)[1];
        if (var == "JOB_COMPLETION_INDEX") {
          EXPECT_EQ(doc.Find("completionMode").value_or(""), "Indexed")
              << u.where << ": $(JOB_COMPLETION_INDEX) exists only in an Indexed Job";
        } else {
          EXPECT_TRUE(DefinesEnv(doc, var)) << u.where << ": $(" << var << ") is not in the container's env";
        }
      }
    }

    if (daemon) {
      EXPECT_EQ(doc.kind, "StatefulSet") << id << ": daemons keep their volume and name in a StatefulSet";
      EXPECT_GT(IntOr(doc.Find("terminationGracePeriodSeconds"), 30), 5)
          << id << ": the daemons drain in-flight RPCs for 5 s after SIGTERM";
      EXPECT_TRUE(doc.Find("terminationGracePeriodSeconds")) << id << ": set terminationGracePeriodSeconds (> 5)";
      EXPECT_EQ(doc.Find("prometheus.io/scrape").value_or(""), "true") << id;
      EXPECT_EQ(doc.Find("prometheus.io/path").value_or(""), "/metrics") << id;
      EXPECT_TRUE(doc.Find("prometheus.io/port")) << id;
      // The durable directory is on a volume from the claim templates.
      const std::string dir_flag = f.binaries.count("tessera-server") ? "data_dir" : "state_dir";
      const auto dir = FlagValue(f, dir_flag);
      ASSERT_TRUE(dir) << id << ": no --" << dir_flag;
      const auto claims = ClaimTemplates(doc);
      bool persistent = false;
      for (const auto& [volume, path] : Mounts(doc)) persistent |= claims.count(volume) && UnderPath(*dir, path);
      EXPECT_TRUE(persistent) << id << ": --" << dir_flag << "=" << *dir
                              << " is not on a volume from volumeClaimTemplates";
      // The governing Service exists.
      const std::string service = doc.Find("serviceName").value_or("");
      const YamlDoc* svc = by_name.count("Service/" + service) ? by_name["Service/" + service] : nullptr;
      ASSERT_NE(svc, nullptr) << id << ": serviceName '" << service << "' names no Service in deploy/k8s";
      if (f.binaries.count("tessera-server")) {
        EXPECT_EQ(svc->Find("clusterIP").value_or(""), "None") << svc->file << ": the servers' Service is headless";
        EXPECT_EQ(doc.Find("podManagementPolicy").value_or(""), "Parallel") << id;
        const std::string adv = FlagValue(f, "advertise_host").value_or("");
        EXPECT_TRUE(absl::StartsWith(adv, absl::StrCat("$(POD_NAME).", service, ".$(POD_NAMESPACE).svc")))
            << id << ": --advertise_host=" << adv << " is not the pod's stable name under Service " << service;
      }
    }
    if (f.binaries.count("tessera-worker")) {
      EXPECT_EQ(doc.kind, "Job") << id;
      EXPECT_EQ(doc.Find("completionMode").value_or(""), "Indexed") << id;
      EXPECT_EQ(IntOr(doc.Find("completions"), -1), IntOr(doc.Find("parallelism"), -2))
          << id << ": completions and parallelism differ";
      EXPECT_TRUE(absl::StrContains(FlagValue(f, "worker_id").value_or(""), "$(JOB_COMPLETION_INDEX)"))
          << id << ": --worker_id must come from the completion index, so a replaced pod keeps its name";
    }
  }
  for (const auto& b : TesseraBinaries()) EXPECT_TRUE(runs.count(b)) << "no manifest runs " << b;

  // kustomization.yaml lists every top-level manifest, and only existing ones.
  const std::string k8s = SourceDir() + "/deploy/k8s";
  std::set<std::string> listed;
  bool in_resources = false;
  for (const auto& piece : absl::StrSplit(ReadFile(k8s + "/kustomization.yaml"), '\n')) {
    const std::string l(piece);
    if (!l.empty() && l[0] != ' ' && l[0] != '-' && l[0] != '#') in_resources = absl::StartsWith(l, "resources:");
    const std::string t = Trim(l);
    if (in_resources && absl::StartsWith(t, "- ")) listed.insert(Trim(t.substr(2)));
  }
  for (const auto& r : listed) EXPECT_TRUE(fs::exists(k8s + "/" + r)) << "kustomization.yaml lists missing " << r;
  for (const auto& e : fs::directory_iterator(k8s)) {
    if (e.is_regular_file() && IsManifest(e.path())) {
      EXPECT_TRUE(listed.count(e.path().filename().string()))
          << "kustomization.yaml does not list " << e.path().filename();
    }
  }

  // The job spec in a ConfigMap is a valid JobSpec whose data the coordinator and workers can read.
  const YamlDoc* coordinator = nullptr;
  const YamlDoc* worker = nullptr;
  for (const auto& doc : d.docs) {
    std::vector<std::string> ignored;
    const DocFlags f = FlagsOf(doc, &ignored);
    if (f.binaries.count("tessera-coordinator")) coordinator = &doc;
    if (f.binaries.count("tessera-worker")) worker = &doc;
  }
  ASSERT_NE(coordinator, nullptr);
  ASSERT_NE(worker, nullptr);
  int specs = 0;
  for (const auto& doc : d.docs) {
    if (doc.kind != "ConfigMap") continue;
    for (size_t i = 0; i < doc.lines.size(); ++i) {
      if (!doc.Content(i) || !absl::EndsWith(doc.Key(i), ".json") || doc.Value(i) != "|") continue;
      std::string json;
      const size_t end = doc.BlockEnd(i);
      const size_t cut = static_cast<size_t>(doc.lines[i].indent) + 2;
      for (size_t j = i + 1; j < end; ++j) json += (doc.lines[j].raw.size() > cut ? doc.lines[j].raw.substr(cut) : "") + "\n";
      auto spec = ParseJobSpecJson(json, doc.Where(i));
      ASSERT_TRUE(spec.ok()) << spec.status();
      ++specs;
      for (const std::string& path : {spec->data().train(), spec->data().test()}) {
        if (path.empty()) continue;
        for (const YamlDoc* reader : {coordinator, worker}) {
          bool readable = false;
          for (const auto& [volume, mount] : Mounts(*reader)) readable |= UnderPath(path, mount);
          EXPECT_TRUE(readable) << doc.Where(i) << ": " << path << " is on no volume mounted in " << reader->file;
        }
      }
    }
  }
  EXPECT_GE(specs, 1) << "no job spec ConfigMap under deploy/k8s";
}

// ------------------------------------------------------------------------------------------------
// systemd

// "30s", "30", "1min", "1min 30s" -> seconds; -1 when unreadable.
int Seconds(const std::string& text) {
  int total = 0;
  static const std::regex kPart(R"((\d+)\s*(s|sec|min|m)?)");
  std::string rest = text;
  std::smatch m;
  bool any = false;
  while (std::regex_search(rest, m, kPart)) {
    const int n = std::stoi(m[1]);
    total += (m[2] == "min" || m[2] == "m") ? n * 60 : n;
    rest = m.suffix();
    any = true;
  }
  return any ? total : -1;
}

TEST(DeployFilesTest, SystemdUnitsRunTheBuiltBinariesHardened) {
  const SystemdDeploy s = LoadSystemd();
  ASSERT_GE(s.units.size(), 2u);
  for (const auto& e : s.errors) ADD_FAILURE() << e;
  bool templated = false;
  for (const auto& u : s.units) {
    const std::string exe = s.exec_binary.count(u.file) ? s.exec_binary.at(u.file) : "";
    EXPECT_TRUE(absl::StartsWith(exe, "/")) << u.file << ": ExecStart needs an absolute path, not '" << exe << "'";
    const std::string binary = TesseraBinary(exe);
    ASSERT_FALSE(binary.empty()) << u.file << ": ExecStart runs '" << exe << "', not a Tessera binary";
    EXPECT_TRUE(IsExecutable(BinaryPath(binary))) << u.file << ": " << binary << " is not in the build";

    EXPECT_EQ(u.Get("Restart"), "on-failure") << u.file;
    EXPECT_EQ(u.Get("User"), "tessera") << u.file;
    EXPECT_EQ(u.Get("NoNewPrivileges"), "yes") << u.file;
    EXPECT_EQ(u.Get("ProtectSystem"), "strict") << u.file;
    EXPECT_EQ(u.Get("ProtectHome"), "yes") << u.file;
    EXPECT_EQ(u.Get("PrivateTmp"), "yes") << u.file;
    EXPECT_TRUE(u.Has("CapabilityBoundingSet") && u.Get("CapabilityBoundingSet").empty())
        << u.file << ": CapabilityBoundingSet= (empty: no capabilities)";
    std::set<std::string> families = absl::StrSplit(u.Get("RestrictAddressFamilies"), ' ', absl::SkipEmpty());
    EXPECT_EQ(families, (std::set<std::string>{"AF_INET", "AF_INET6", "AF_UNIX"})) << u.file;
    EXPECT_TRUE(u.Has("LimitNOFILE")) << u.file;
    EXPECT_GT(Seconds(u.Get("TimeoutStopSec")), 5) << u.file << ": the daemons drain in-flight RPCs for 5 s";
    EXPECT_EQ(u.Get("EnvironmentFile"), "/etc/tessera/tessera.env") << u.file << ": the first EnvironmentFile";

    // The durable directory flag is the StateDirectory, and writable.
    const std::string state = u.Get("StateDirectory");
    ASSERT_FALSE(state.empty()) << u.file << ": no StateDirectory=";
    const std::string dir = "/var/lib/" + state;
    const std::string dir_flag = binary == "tessera-server" ? "data_dir" : "state_dir";
    bool found = false;
    for (const auto& f : s.flags) {
      if (absl::StartsWith(f.where, u.file + ":") && f.name == dir_flag) {
        found = true;
        EXPECT_EQ(f.value, dir) << f.where << ": --" << dir_flag << " vs StateDirectory=" << state;
      }
    }
    EXPECT_TRUE(found) << u.file << ": no --" << dir_flag;
    EXPECT_TRUE(absl::StrContains(" " + u.Get("ReadWritePaths") + " ", " " + dir + " "))
        << u.file << ": ReadWritePaths= lacks " << dir;
    if (absl::StrContains(u.file, "@.service")) {
      templated = true;
      EXPECT_TRUE(absl::StrContains(state, "%i")) << u.file << ": one directory per instance";
    }
  }
  EXPECT_TRUE(templated) << "no templated tessera-server@.service";

  // The sysusers entry has the image's uid.
  const std::string sysusers = ReadFile(SourceDir() + "/deploy/systemd/tessera.sysusers");
  EXPECT_TRUE(std::regex_search(sysusers, std::regex(R"((^|\n)u tessera 10001 )"))) << "tessera.sysusers: u tessera 10001";
}

// ------------------------------------------------------------------------------------------------
// Dockerfile

TEST(DeployFilesTest, DockerfileBuildsWithTheProjectScriptsAndShipsTheBinaries) {
  const auto ins = ParseDockerfile();
  std::vector<const Instruction*> froms;
  for (const auto& i : ins) {
    if (i.op == "FROM") froms.push_back(&i);
  }
  ASSERT_GE(froms.size(), 2u);
  EXPECT_TRUE(absl::StartsWith(froms.front()->args, "debian:12 ")) << DockerWhere(*froms.front());
  EXPECT_TRUE(absl::StrContains(froms.front()->args, " AS build")) << DockerWhere(*froms.front());
  EXPECT_EQ(froms.back()->args, "debian:12-slim") << DockerWhere(*froms.back());
  const int build = 0, runtime = froms.back()->stage;

  // The build stage uses the project's own scripts and no package list of its own.
  std::string build_runs;
  for (const auto& i : ins) {
    if (i.stage == build && i.op == "RUN") build_runs += i.args + "\n";
  }
  EXPECT_TRUE(absl::StrContains(build_runs, "./deploy/install-deps.sh")) << build_runs;
  EXPECT_TRUE(absl::StrContains(build_runs, "./deploy/build.sh")) << build_runs;
  EXPECT_FALSE(absl::StrContains(build_runs, "apt-get install")) << "packages belong in deploy/install-deps.sh";

  // COPY sources exist and are not filtered out of the context.
  std::vector<std::string> ignore;
  for (const auto& l : absl::StrSplit(ReadFile(DockerfilePath() + ".dockerignore"), '\n')) {
    const std::string t = Trim(l);
    if (!t.empty() && t[0] != '#') ignore.push_back(t);
  }
  for (const char* p : {"build", ".git"}) {
    bool excluded = false;
    for (const auto& pat : ignore) excluded |= fnmatch(pat.c_str(), p, 0) == 0;
    EXPECT_TRUE(excluded) << "Dockerfile.dockerignore must exclude " << p;
  }
  std::set<std::string> shipped;
  for (const auto& i : ins) {
    if (i.op != "COPY") continue;
    std::vector<std::string> words = absl::StrSplit(i.args, ' ', absl::SkipEmpty());
    std::string from;
    std::vector<std::string> sources;
    for (size_t w = 0; w + 1 < words.size(); ++w) {
      if (absl::StartsWith(words[w], "--from=")) from = words[w].substr(7);
      if (!absl::StartsWith(words[w], "--")) sources.push_back(words[w]);
    }
    for (const auto& src : sources) {
      if (!from.empty()) {
        const std::string b = TesseraBinary(src);
        EXPECT_FALSE(b.empty()) << DockerWhere(i) << ": copies " << src << ", not a Tessera binary";
        EXPECT_TRUE(IsExecutable(BinaryPath(b))) << DockerWhere(i) << ": " << b << " is not in the build";
        if (i.stage == runtime) shipped.insert(b);
        continue;
      }
      EXPECT_TRUE(fs::exists(fs::path(SourceDir()) / src)) << DockerWhere(i) << ": COPY source " << src << " is missing";
      for (const auto& pat : ignore) {
        const std::string first = src == "." ? "" : std::string(fs::path(src).begin()->string());
        EXPECT_FALSE(!first.empty() && fnmatch(pat.c_str(), first.c_str(), 0) == 0)
            << DockerWhere(i) << ": " << src << " is excluded by Dockerfile.dockerignore (" << pat << ")";
      }
    }
  }
  EXPECT_EQ(shipped, std::set<std::string>(TesseraBinaries().begin(), TesseraBinaries().end()));

  // Non-root: the numeric uid of the user the image creates.
  std::string user, useradd;
  for (const auto& i : ins) {
    if (i.stage == runtime && i.op == "USER") user = i.args;
    if (i.stage == runtime && i.op == "RUN" && absl::StrContains(i.args, "useradd")) useradd = i.args;
  }
  EXPECT_TRUE(user == "10001" || user == "10001:10001") << "USER " << user;
  EXPECT_TRUE(absl::StrContains(useradd, "--uid 10001")) << useradd;
}

// Packages owning the shared libraries `binaries` load: dpkg's answer for each library path.
std::map<std::string, std::string> LibraryPackages(const std::vector<std::string>& binaries,
                                                   std::vector<std::string>* errors) {
  std::map<std::string, std::string> lib_binary;  // library path -> a binary that loads it
  static const std::regex kLib(R"(^\s*(\S+)(?: => (\S+))? \(0x)");
  for (const auto& b : binaries) {
    const CommandResult r = Run("ldd " + Quote(BinaryPath(b)));
    for (const auto& piece : absl::StrSplit(r.output, '\n')) {
      const std::string l(piece);
      if (absl::StrContains(l, "not found")) errors->push_back(b + ": " + Trim(l));
      std::smatch m;
      if (!std::regex_search(l, m, kLib)) continue;
      const std::string path = m[2].matched ? m[2].str() : m[1].str();
      if (absl::StartsWith(path, "/")) lib_binary.emplace(path, b);
    }
  }
  // dpkg knows a file under the path its package ships, with or without /usr (merged /usr) and
  // through alternatives symlinks: ask for every spelling at once.
  std::map<std::string, std::vector<std::string>> candidates;
  std::string args;
  for (const auto& [lib, b] : lib_binary) {
    std::error_code ec;
    std::vector<std::string> c = {lib, fs::canonical(lib, ec).string()};
    const std::vector<std::string> spellings = c;
    for (const auto& s : spellings) {
      if (absl::StartsWith(s, "/usr/")) {
        c.push_back(s.substr(4));
      } else if (!s.empty()) {
        c.push_back("/usr" + s);
      }
    }
    candidates[lib] = c;
    for (const auto& x : c) {
      if (!x.empty()) args += " " + Quote(x);
    }
  }
  std::map<std::string, std::string> owner;  // path -> package
  const CommandResult r = Run("dpkg-query -S" + args);
  for (const auto& piece : absl::StrSplit(r.output, '\n')) {
    const std::string l(piece);
    const size_t sep = l.find(": /");
    if (sep == std::string::npos || absl::StartsWith(l, "diversion")) continue;
    const std::vector<std::string> pkgs = absl::StrSplit(l.substr(0, sep), ", ");
    const std::string pkg = pkgs[0].substr(0, pkgs[0].find(':'));
    owner[l.substr(sep + 2)] = pkg;
  }
  std::map<std::string, std::string> out;  // library -> package
  for (const auto& [lib, c] : candidates) {
    for (const auto& x : c) {
      if (owner.count(x)) {
        out[lib] = owner[x];
        break;
      }
    }
    if (!out.count(lib)) errors->push_back(absl::StrCat(lib, " (loaded by ", lib_binary[lib], ") belongs to no package"));
  }
  return out;
}

bool PackageExists(const std::string& name) {
  if (Run("dpkg-query -W " + Quote(name)).exit_code == 0) return true;
  const CommandResult r = Run("apt-cache show " + Quote(name));
  return r.exit_code == 0 && absl::StrContains(r.output, "Package: " + name);
}

TEST(DeployFilesTest, RuntimeImageInstallsThePackageOfEveryLibraryTheBinariesLoad) {
  if (!HaveCommand("ldd") || !HaveCommand("dpkg-query")) GTEST_SKIP() << "needs ldd and dpkg (Debian)";
  const auto ins = ParseDockerfile();
  int runtime = 0;
  for (const auto& i : ins) runtime = std::max(runtime, i.stage);
  const std::vector<std::string> listed = RuntimePackages(ins, runtime);
  ASSERT_FALSE(listed.empty()) << "no `apt-get install` in the runtime stage";
  const std::set<std::string> listed_set(listed.begin(), listed.end());
  EXPECT_EQ(listed_set.size(), listed.size()) << "a package is listed twice";

  std::vector<std::string> errors;
  const auto packages = LibraryPackages(TesseraBinaries(), &errors);
  for (const auto& e : errors) ADD_FAILURE() << e;
  ASSERT_GE(packages.size(), 10u);
  static const std::regex kSanitizer("^lib(asan|ubsan|tsan|lsan)[0-9]+$");  // sanitizer builds only
  std::set<std::string> needed;
  for (const auto& [lib, pkg] : packages) {
    if (std::regex_match(pkg, kSanitizer)) continue;
    needed.insert(pkg);
    EXPECT_TRUE(listed_set.count(pkg)) << "deploy/docker/Dockerfile does not install " << pkg << ", which provides "
                                       << lib;
  }
  for (const auto& p : listed) {
    // jemalloc is linked only when the build enables it (not under sanitizers).
    if (p != "libjemalloc2") {
      EXPECT_TRUE(needed.count(p)) << "deploy/docker/Dockerfile installs " << p << ", which no binary loads";
    }
    EXPECT_TRUE(PackageExists(p)) << p << " is not a Debian package (apt-cache show)";
  }
}

// ------------------------------------------------------------------------------------------------
// docs/operations.md

// Command lines of a Markdown file: fenced code (continuations joined) and inline code spans.
std::vector<std::pair<int, std::string>> CodeLines(const std::string& md) {
  std::vector<std::pair<int, std::string>> out;
  bool fenced = false;
  std::string cur;
  int number = 0, start = 0;
  static const std::regex kSpan("`([^`]+)`");
  for (const auto& piece : absl::StrSplit(md, '\n')) {
    ++number;
    const std::string l(piece);
    if (absl::StartsWith(Trim(l), "```")) {
      fenced = !fenced;
      continue;
    }
    if (fenced) {
      const std::string t = Trim(l);
      if (cur.empty()) start = number;
      if (!t.empty() && t.back() == '\\') {
        cur += t.substr(0, t.size() - 1) + " ";
        continue;
      }
      out.push_back({start, cur + t});
      cur.clear();
      continue;
    }
    for (auto it = std::sregex_iterator(l.begin(), l.end(), kSpan); it != std::sregex_iterator(); ++it) {
      out.push_back({number, (*it)[1]});
    }
  }
  return out;
}

// The Tessera commands of a shell line and their flags: binary -> flags.
std::vector<std::pair<std::string, std::vector<std::string>>> TesseraCommands(const std::string& line) {
  static const std::set<std::string> kSeparators = {"--", "&&", "||", "|", ";", "$", "sudo", "exec", "then", "do", "watch"};
  std::vector<std::string> words;
  for (const auto& w : absl::StrSplit(line, ' ', absl::SkipEmpty())) words.emplace_back(w);
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  bool at_start = true;
  bool in_command = false;
  bool after_image = false;  // the previous word is an image reference (docker run IMAGE CMD)
  static const std::regex kImage(R"(^[a-z0-9][a-z0-9./-]*:[A-Za-z0-9._-]+$)");
  for (std::string w : words) {
    const bool separator = kSeparators.count(w) > 0;
    if (absl::StartsWith(w, "$(")) {
      w = w.substr(2);
      at_start = true;
    }
    while (!w.empty() && std::string("`'\"[]").find(w.front()) != std::string::npos) w.erase(0, 1);
    // A word that closes more parentheses than it opens ends a $(...) command.
    const bool closes = std::count(w.begin(), w.end(), ')') > std::count(w.begin(), w.end(), '(');
    while (!w.empty() && std::string("`'\")];").find(w.back()) != std::string::npos) w.pop_back();
    if (separator) {
      at_start = true;
      in_command = false;
      continue;
    }
    const std::string b = TesseraBinary(w);
    const bool path = absl::StrContains(w, "/");
    if (!b.empty() && (at_start || path || after_image)) {
      out.push_back({b, {}});
      in_command = true;
    } else if (in_command && absl::StartsWith(w, "--")) {
      out.back().second.push_back(w);
    }
    // Environment assignments (VAR=value) before a command keep it at the start.
    at_start = std::regex_match(w, std::regex("^[A-Z_][A-Z0-9_]*=.*")) && at_start;
    after_image = std::regex_match(w, kImage);
    if (closes) in_command = false;
  }
  return out;
}

TEST(DeployFilesTest, OperationsGuideUsesRealFlagsAndMetrics) {
  const std::string md = ReadFile(SourceDir() + "/docs/operations.md");
  ASSERT_FALSE(md.empty());
  int checked = 0;
  for (const auto& [n, line] : CodeLines(md)) {
    for (const auto& [binary, flags] : TesseraCommands(line)) {
      for (const auto& word : flags) {
        const auto f = ParseFlag(word, binary, "");
        if (!f) continue;
        ++checked;
        EXPECT_TRUE(BinaryAcceptsFlag(binary, f->name))
            << "docs/operations.md:" << n << ": " << binary << " has no flag --" << f->name << "\n  " << line;
      }
    }
  }
  EXPECT_GE(checked, 20) << "flags found in docs/operations.md commands";

  // Every metric the guide names is exported by the code.
  std::string sources;
  for (const char* dir : {"common", "server", "client", "worker"}) {
    for (const auto& p : FilesUnder(dir, [](const fs::path& p) { return p.extension() == ".cc"; })) {
      sources += ReadFile(p.string());
    }
  }
  const size_t begin = md.find("\n## Metrics");
  ASSERT_NE(begin, std::string::npos) << "docs/operations.md has no '## Metrics' section";
  const size_t end = md.find("\n## ", begin + 1);
  const std::string section = md.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
  static const std::regex kMetric(R"(\btessera_[a-z0-9_]+)");
  int metrics = 0;
  for (auto it = std::sregex_iterator(section.begin(), section.end(), kMetric); it != std::sregex_iterator(); ++it) {
    std::string name = (*it)[0];
    for (const char* suffix : {"_bucket", "_count", "_sum"}) {
      if (!absl::StrContains(sources, "\"" + name + "\"") && absl::EndsWith(name, suffix)) {
        name = name.substr(0, name.size() - strlen(suffix));
      }
    }
    ++metrics;
    EXPECT_TRUE(absl::StrContains(sources, "\"" + name + "\"")) << "docs/operations.md names metric " << name
                                                                << ", which no source file exports";
  }
  EXPECT_GE(metrics, 10);
}

}  // namespace
}  // namespace tessera
