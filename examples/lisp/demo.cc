// `bazel run //:demo`: runs examples/lisp/demo.scm, found in this binary's runfiles.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "examples/lisp/repl.h"

namespace {

constexpr char kScript[] = "codeheap/examples/lisp/demo.scm";

// Where Bazel put the script: $RUNFILES_DIR (set in tests), next to the
// binary (<binary>.runfiles), or the working directory `bazel run` starts in.
std::string find_script(const char* argv0) {
  std::vector<std::string> candidates;
  if (const char* dir = std::getenv("RUNFILES_DIR"))
    candidates.push_back(std::string(dir) + "/" + kScript);
  candidates.push_back(std::string(argv0) + ".runfiles/" + kScript);
  candidates.push_back("examples/lisp/demo.scm");
  for (const std::string& path : candidates) {
    if (access(path.c_str(), R_OK) == 0) return path;
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  std::string script = find_script(argv[0]);
  if (script.empty()) {
    std::fprintf(stderr, "demo: cannot find %s in the runfiles\n", kScript);
    return 1;
  }
  std::vector<std::string> args(argv, argv + argc);
  args.push_back(script);
  return lisp::lisp_main(args);
}
