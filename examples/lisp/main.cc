// lisp: the Lisp compiled through LLVM into the garbage-collected code heap (see repl.h).
#include <string>
#include <vector>

#include "examples/lisp/repl.h"

int main(int argc, char** argv) {
  return lisp::lisp_main(std::vector<std::string>(argv, argv + argc));
}
