#include "examples/lisp/reader.h"

#include <cctype>
#include <charconv>

#include <spdlog/fmt/fmt.h>

#include "examples/lisp/error.h"

namespace lisp {
namespace {

bool is_delimiter(char c) {
  return std::isspace(static_cast<unsigned char>(c)) || c == '(' || c == ')' || c == '"' ||
         c == ';' || c == '\'' || c == '`' || c == ',';
}

}  // namespace

Reader::Reader(std::string_view text, std::string source)
    : text_(text), source_(std::move(source)) {}

char Reader::advance() {
  char c = text_[pos_++];
  if (c == '\n') {
    ++line_;
    column_ = 1;
  } else {
    ++column_;
  }
  return c;
}

void Reader::fail(const std::string& message, bool incomplete) const {
  throw SyntaxError(fmt::format("syntax error: {}:{}:{}: {}", source_, line_, column_, message),
                    incomplete);
}

void Reader::skip_whitespace() {
  while (!at_end()) {
    char c = peek();
    if (std::isspace(static_cast<unsigned char>(c))) {
      advance();
    } else if (c == ';') {
      while (!at_end() && peek() != '\n') advance();
    } else if (c == '#' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '|') {
      advance();
      advance();
      while (!(pos_ + 1 < text_.size() && peek() == '|' && text_[pos_ + 1] == '#')) {
        if (at_end()) fail("unterminated block comment", /*incomplete=*/true);
        advance();
      }
      advance();
      advance();
    } else {
      return;
    }
  }
}

std::optional<Value> Reader::next() {
  skip_whitespace();
  if (at_end()) return std::nullopt;
  last_line_ = line_;
  return read();
}

Value Reader::read() {
  skip_whitespace();
  if (at_end()) fail("unexpected end of input", /*incomplete=*/true);
  if (depth_ == kMaxNesting) fail(fmt::format("data nested more than {} deep", kMaxNesting));
  struct Nested {
    int& depth;
    explicit Nested(int& d) : depth(++d) {}
    ~Nested() { --depth; }
  } nested(depth_);
  char c = peek();
  switch (c) {
    case '(': {
      int line = line_, column = column_;
      advance();
      return read_list(line, column);
    }
    case ')':
      fail("unexpected ')'");
    case '\'': {
      advance();
      Value quoted = read();
      return cons(intern("quote"), cons(quoted, kNil));
    }
    case '"':
      advance();
      return read_string();
    case '`':
    case ',':
      fail("quasiquote (` , ,@) is not supported");
    case '#':
      return read_hash();
    default:
      return read_atom();
  }
}

Value Reader::read_list(int open_line, int open_column) {
  // Built front to back through the last pair, so a long list needs no recursion.
  Value head = kNil, tail = kNil;
  for (;;) {
    skip_whitespace();
    if (at_end()) {
      fail(fmt::format("unterminated list opened at {}:{}", open_line, open_column),
           /*incomplete=*/true);
    }
    if (peek() == ')') {
      advance();
      return head;
    }
    if (peek() == '.' && pos_ + 1 < text_.size() && is_delimiter(text_[pos_ + 1])) {
      advance();
      if (head == kNil) fail("'.' with nothing before it");
      as<Pair>(tail)->cdr = read();
      skip_whitespace();
      if (at_end()) fail("unterminated dotted list", /*incomplete=*/true);
      if (peek() != ')') fail("expected ')' after the datum following '.'");
      advance();
      return head;
    }
    Value cell = cons(read(), kNil);
    if (head == kNil) {
      head = cell;
    } else {
      as<Pair>(tail)->cdr = cell;
    }
    tail = cell;
  }
}

Value Reader::read_string() {
  std::string text;
  for (;;) {
    if (at_end()) fail("unterminated string", /*incomplete=*/true);
    char c = advance();
    if (c == '"') return make_string(text);
    if (c != '\\') {
      text += c;
      continue;
    }
    if (at_end()) fail("unterminated string", /*incomplete=*/true);
    switch (char e = advance()) {
      case 'n':
        text += '\n';
        break;
      case 't':
        text += '\t';
        break;
      case '\\':
        text += '\\';
        break;
      case '"':
        text += '"';
        break;
      default:
        fail(fmt::format("unknown string escape '\\{}'", e));
    }
  }
}

Value Reader::read_hash() {
  advance();  // '#'
  if (at_end()) fail("'#' at end of input");
  if (peek() == '\\') {
    advance();
    if (at_end()) fail("'#\\' at end of input");
    std::string name(1, advance());
    while (!at_end() && !is_delimiter(peek())) name += advance();
    if (name.size() == 1) return make_char(static_cast<unsigned char>(name[0]));
    if (name == "space") return make_char(' ');
    if (name == "newline") return make_char('\n');
    if (name == "tab") return make_char('\t');
    fail(fmt::format("unknown character name '#\\{}'", name));
  }
  std::string word;
  while (!at_end() && !is_delimiter(peek())) word += advance();
  if (word == "t" || word == "true") return kTrue;
  if (word == "f" || word == "false") return kFalse;
  fail(fmt::format("unknown syntax '#{}'", word));
}

Value Reader::read_atom() {
  std::string word;
  while (!at_end() && !is_delimiter(peek())) word += advance();
  if (word.empty()) fail(fmt::format("unexpected character '{}'", peek()));
  const char* first = word.data();
  const char* last = word.data() + word.size();
  auto digit = [&](const char* p) {
    return p < last && std::isdigit(static_cast<unsigned char>(*p));
  };
  // from_chars takes a '-' sign but not a '+'.
  bool numeric = digit(first) || ((*first == '-' || *first == '+') && digit(first + 1));
  if (*first == '+') ++first;
  if (numeric) {
    int64_t n = 0;
    auto [end, ec] = std::from_chars(first, last, n);
    if (end == last) {
      if (ec == std::errc() && fits_fixnum(n)) return make_fixnum(n);
      fail(fmt::format("integer {} out of range (fixnums are {} .. {})", word, kFixnumMin,
                       kFixnumMax));
    }
    // Otherwise something like 1+ or 3d: a symbol, as in Scheme.
  }
  return intern(word);
}

}  // namespace lisp
