#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

extern char** environ;

namespace tessera {
namespace {

struct ChildArgs {
  char** argv;
  char** envp;
  int log_fd;
  bool kill_with_parent;
  pid_t parent;
};

// Runs in the child between vfork() and execve(): system calls only, no memory writes.
[[noreturn]] void ExecChild(const ChildArgs& a) {
  if (a.kill_with_parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != a.parent) ::_exit(127);
  }
  // The parent may block shutdown signals for sigwait(); the child starts with a clean mask.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (a.log_fd >= 0) {
    ::dup2(a.log_fd, STDOUT_FILENO);
    ::dup2(a.log_fd, STDERR_FILENO);
  }
  ::execve(a.argv[0], a.argv, a.envp);
  ::_exit(127);
}

// vfork, not fork: fork runs pthread_atfork handlers (gRPC registers some) in a multithreaded
// parent and in the child, which can trip gRPC's internal assertions. Kept out of line so no
// caller variables live across vfork().
__attribute__((noinline)) pid_t Spawn(const ChildArgs& args) {
  const pid_t pid = ::vfork();
  if (pid == 0) ExecChild(args);
  return pid;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const SubprocessOptions& options) {
  if (::access(options.binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot execute ", options.binary, ": ", std::strerror(errno)));
  }
  // Everything the child needs is prepared before vfork(): after it, only system calls.
  std::vector<std::string> argv_storage;
  argv_storage.push_back(options.binary);
  argv_storage.insert(argv_storage.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    bool overridden = false;
    for (const auto& [k, v] : options.env) {
      if (std::strncmp(*e, k.c_str(), k.size()) == 0 && (*e)[k.size()] == '=') overridden = true;
    }
    if (!overridden) env_storage.emplace_back(*e);
  }
  for (const auto& [k, v] : options.env) env_storage.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

  const int log_fd =
      options.log_file.empty() ? -1 : ::open(options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (!options.log_file.empty() && log_fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open log file ", options.log_file, ": ", std::strerror(errno)));
  }
  const ChildArgs child{argv.data(), envp.data(), log_fd, options.kill_with_parent, ::getpid()};
  const pid_t pid = Spawn(child);
  if (pid < 0) {
    if (log_fd >= 0) ::close(log_fd);
    return absl::InternalError(absl::StrCat("vfork failed: ", std::strerror(errno)));
  }
  if (log_fd >= 0) ::close(log_fd);
  const std::string name = std::filesystem::path(options.binary).filename().string();
  return std::unique_ptr<Subprocess>(new Subprocess(pid, name));
}

Subprocess::~Subprocess() {
  if (!exit_code_.has_value()) Stop();
}

bool Subprocess::Running() {
  if (exit_code_.has_value()) return false;
  return !Wait(absl::ZeroDuration()).has_value();
}

void Subprocess::Signal(int sig) const {
  if (!exit_code_.has_value()) ::kill(pid_, sig);
}

std::optional<int> Subprocess::Wait(absl::Duration timeout) {
  if (exit_code_.has_value()) return exit_code_;
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (r < 0 && errno != EINTR) {
      exit_code_ = -1;  // not our child any more
      return exit_code_;
    }
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

int Subprocess::Stop(absl::Duration grace) {
  if (exit_code_.has_value()) return *exit_code_;
  ::kill(pid_, SIGCONT);  // a stopped child cannot handle SIGTERM
  ::kill(pid_, SIGTERM);
  if (auto code = Wait(grace)) return *code;
  ::kill(pid_, SIGKILL);
  return Wait(absl::Seconds(10)).value_or(-1);
}

absl::StatusOr<int> WaitForPortFile(const std::string& path, absl::Duration timeout, Subprocess* process) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    std::ifstream in(path);
    std::string text;
    if (in && std::getline(in, text)) {
      int port = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) && port > 0) return port;
    }
    if (process != nullptr && !process->Running()) {
      return absl::UnavailableError(absl::StrCat(process->name(), " (pid ", process->pid(),
                                                 ") exited with code ", process->exit_code().value_or(-1),
                                                 " before writing ", path));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no port in ", path, " after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

absl::StatusOr<std::string> MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string templ = absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/", prefix, "-XXXXXX");
  if (::mkdtemp(templ.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", templ, ": ", std::strerror(errno)));
  }
  return templ;
}

void RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

}  // namespace tessera
