// Lisp-level errors. Host code (primitives, the runtime's helpers for compiled code, the
// compiler) throws them; they unwind through compiled frames (which have unwind tables) to the
// REPL or the script driver, which print the message and the top-level form.
#pragma once

#include <stdexcept>
#include <string>

namespace lisp {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A reader error. `incomplete` is set when the input ended inside a datum, so the REPL can
// read another line instead of reporting it.
class SyntaxError : public Error {
 public:
  SyntaxError(const std::string& message, bool incomplete)
      : Error(message), incomplete_(incomplete) {}
  bool incomplete() const { return incomplete_; }

 private:
  bool incomplete_;
};

// Thrown by (exit [code]); unwinds to the driver, which exits with `code`.
struct ExitRequest {
  int code;
};

}  // namespace lisp
