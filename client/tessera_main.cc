// tessera: the command-line tool for Tessera clusters.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "client/demo.h"
#include "common/flags.h"

namespace {
constexpr char kUsage[] =
    "the Tessera command-line tool.\n\n"
    "Usage: tessera <command> [flags]\n\n"
    "Commands:\n"
    "  demo        start a server on loopback, push and pull, print what happened\n";
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args = tessera::ParseFlags(argc, argv, kUsage);
  if (args.empty()) {
    std::fprintf(stderr, "tessera: %s", kUsage);
    return 2;
  }
  const std::string& cmd = args[0];
  if (cmd == "demo") return tessera::client::RunDemo();
  std::fprintf(stderr, "tessera: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
