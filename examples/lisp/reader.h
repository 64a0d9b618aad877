// The reader: text -> Lisp data (pairs, symbols, fixnums, strings, characters, booleans).
//
// Syntax: integers (fixnum range), #t/#f (#true/#false), #\c characters (#\space, #\newline,
// #\tab), "strings" with \" \\ \n \t escapes, symbols, (lists), (dotted . lists), 'x for
// (quote x), ; line comments and #| block comments |#.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "examples/lisp/value.h"

namespace lisp {

class Reader {
 public:
  // Lists and quotes nested deeper are a syntax error: reading (and compiling) them recurses,
  // and hostile input must get an error, not a stack overflow.
  static constexpr int kMaxNesting = 1000;

  // `text` must outlive the reader. `source` names the input in error messages.
  Reader(std::string_view text, std::string source);

  // The next datum, or nullopt at the end of the input. Throws SyntaxError, with
  // incomplete() set when the input ends inside a datum.
  std::optional<Value> next();

  // The line (1-based) where the datum last returned by next() starts.
  int line_of_last() const { return last_line_; }

 private:
  Value read();
  Value read_list(int open_line, int open_column);
  Value read_string();
  Value read_hash();
  Value read_atom();
  void skip_whitespace();
  [[noreturn]] void fail(const std::string& message, bool incomplete = false) const;

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }
  char advance();

  std::string_view text_;
  std::string source_;
  size_t pos_ = 0;
  int line_ = 1;
  int column_ = 1;
  int last_line_ = 1;
  int depth_ = 0;  // data being read around the current one
};

}  // namespace lisp
