// Command-line parsing for Tessera binaries: absl flags with a `--help` that lists the flags
// defined in the binary's *_main.cc (absl's default only matches files named after the program).
#ifndef TESSERA_COMMON_FLAGS_H_
#define TESSERA_COMMON_FLAGS_H_

#include <string>
#include <vector>

namespace tessera {

// Sets the usage text, parses flags (exiting on --help or a bad flag), and returns the positional
// arguments after the program name. Call once from main().
std::vector<std::string> ParseFlags(int argc, char** argv, const std::string& usage);

}  // namespace tessera

#endif  // TESSERA_COMMON_FLAGS_H_
