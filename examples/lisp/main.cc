// lisp: the Lisp compiled into the garbage-collected code heap in two tiers (see repl.h).
#include <string>
#include <vector>

#include "examples/lisp/repl.h"

int main(int argc, char** argv) {
  return lisp::lisp_main(std::vector<std::string>(argv, argv + argc));
}
