// The `lisp` command: runs a script, or reads-evaluates-prints.
//
//   lisp [--stats] [--stack-size KIB] [SCRIPT]
//
// With SCRIPT, evaluates its forms in order and exits 1 at the first error (the message names
// the form and its line). Without, a REPL: line editing and history through libedit when stdin
// is a terminal, plain line reading otherwise (so tests and pipes can drive it); errors are
// reported and the REPL goes on; end of input or (exit) quits. --stats prints the heap-stats
// dump at exit; --stack-size runs the Lisp on a thread with a stack of that many KiB.
#pragma once

#include <string>
#include <vector>

namespace lisp {

// `args` as main's argv (args[0] is the program name). Returns the exit status.
int lisp_main(const std::vector<std::string>& args);

}  // namespace lisp
