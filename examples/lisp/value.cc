#include "examples/lisp/value.h"

#include <cstring>

#include <spdlog/fmt/fmt.h>

#include "examples/lisp/boehm.h"
#include "examples/lisp/error.h"

namespace lisp {
namespace {

template <typename T>
T* allocate(size_t bytes, Type type, bool pointer_free = false) {
  void* memory = pointer_free ? GC_MALLOC_ATOMIC(bytes) : GC_MALLOC(bytes);
  if (memory == nullptr) throw Error("out of memory");
  auto* object = static_cast<T*>(memory);
  object->header = static_cast<uint64_t>(type);
  return object;
}

String* new_string(std::string_view text) {
  auto* s = allocate<String>(sizeof(String) + text.size() + 1, Type::kString,
                             /*pointer_free=*/true);
  s->length = static_cast<int64_t>(text.size());
  std::memcpy(s->chars, text.data(), text.size());
  s->chars[text.size()] = '\0';
  return s;
}

uint64_t hash_of(std::string_view text) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The intern table: open addressing over an array in the Boehm heap. The table header is
// uncollectable, so the collector treats it as a root and every symbol stays reachable (a
// std::unordered_map would live in malloc memory, which Boehm does not scan).
struct SymbolTable {
  Value* slots;  // GC_MALLOC'd, `capacity` entries, 0 = empty
  size_t capacity;
  size_t count;
};

SymbolTable* symbol_table() {
  static SymbolTable* table = [] {
    auto* t = static_cast<SymbolTable*>(GC_MALLOC_UNCOLLECTABLE(sizeof(SymbolTable)));
    t->capacity = 1024;
    t->slots = static_cast<Value*>(GC_MALLOC(t->capacity * sizeof(Value)));
    t->count = 0;
    return t;
  }();
  return table;
}

void insert_slot(Value* slots, size_t capacity, Value symbol) {
  size_t i = as<Symbol>(symbol)->hash & (capacity - 1);
  while (slots[i] != 0) i = (i + 1) & (capacity - 1);
  slots[i] = symbol;
}

void grow(SymbolTable* table) {
  size_t capacity = table->capacity * 2;
  auto* slots = static_cast<Value*>(GC_MALLOC(capacity * sizeof(Value)));
  if (slots == nullptr) throw Error("out of memory");
  for (size_t i = 0; i < table->capacity; ++i) {
    if (table->slots[i] != 0) insert_slot(slots, capacity, table->slots[i]);
  }
  table->slots = slots;
  table->capacity = capacity;
}

void write_to(std::string& out, Value v, bool display, int depth = 0);

// Lists nested deeper are written as "(...)": writing recurses, and data built at run time can
// nest as deep as memory allows.
constexpr int kMaxWriteDepth = 1000;

void write_list(std::string& out, Value v, bool display, int depth) {
  static const Value quote = intern("quote");
  if (++depth > kMaxWriteDepth) {
    out += "(...)";
    return;
  }
  if (car(v) == quote && is_pair(cdr(v)) && cdr(cdr(v)) == kNil) {
    out += '\'';
    write_to(out, car(cdr(v)), display, depth);
    return;
  }
  out += '(';
  write_to(out, car(v), display, depth);
  for (v = cdr(v); is_pair(v); v = cdr(v)) {
    out += ' ';
    write_to(out, car(v), display, depth);
  }
  if (v != kNil) {
    out += " . ";
    write_to(out, v, display, depth);
  }
  out += ')';
}

void write_string_literal(std::string& out, std::string_view text) {
  out += '"';
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += c;
    }
  }
  out += '"';
}

void write_char(std::string& out, uint32_t code, bool display) {
  if (display) {
    out += static_cast<char>(code);
    return;
  }
  switch (code) {
    case ' ':
      out += "#\\space";
      break;
    case '\n':
      out += "#\\newline";
      break;
    case '\t':
      out += "#\\tab";
      break;
    default:
      out += "#\\";
      out += static_cast<char>(code);
  }
}

void write_to(std::string& out, Value v, bool display, int depth) {
  if (is_fixnum(v)) {
    out += std::to_string(fixnum_value(v));
    return;
  }
  if (is_char(v)) return write_char(out, char_value(v), display);
  switch (v) {
    case kFalse:
      out += "#f";
      return;
    case kTrue:
      out += "#t";
      return;
    case kNil:
      out += "()";
      return;
    case kUnspecified:
      out += "#<unspecified>";
      return;
    case kUnbound:
      out += "#<unbound>";
      return;
    case kUnassigned:
      out += "#<unassigned>";
      return;
  }
  if (!is_object(v)) {
    out += fmt::format("#<unknown {:#x}>", v);
    return;
  }
  switch (type_of(as<Object>(v))) {
    case Type::kPair:
      return write_list(out, v, display, depth);
    case Type::kString:
      if (display) {
        out += string_view_of(v);
      } else {
        write_string_literal(out, string_view_of(v));
      }
      return;
    case Type::kSymbol:
      out += symbol_name(v);
      return;
    case Type::kClosure: {
      const Template* templ = as<Closure>(v)->templ;
      out += templ->tier == Tier::kHost ? "#<primitive" : "#<procedure";
      if (templ->name != kFalse) {
        out += ' ';
        out += symbol_name(templ->name);
      }
      out += '>';
      return;
    }
    case Type::kBox:
      out += "#<box>";
      return;
    case Type::kTemplate:
      break;
  }
  out += fmt::format("#<object {:#x}>", v);
}

}  // namespace

Value cons(Value head, Value tail) {
  auto* pair = allocate<Pair>(sizeof(Pair), Type::kPair);
  pair->car = head;
  pair->cdr = tail;
  return to_value(pair);
}

Value make_string(std::string_view text) { return to_value(new_string(text)); }

Value intern(std::string_view name) {
  SymbolTable* table = symbol_table();
  uint64_t hash = hash_of(name);
  for (size_t i = hash & (table->capacity - 1);; i = (i + 1) & (table->capacity - 1)) {
    Value candidate = table->slots[i];
    if (candidate == 0) break;
    if (as<Symbol>(candidate)->hash == hash && symbol_name(candidate) == name) return candidate;
  }
  auto* symbol = allocate<Symbol>(sizeof(Symbol), Type::kSymbol);
  symbol->name = new_string(name);
  symbol->value = kUnbound;
  symbol->hash = hash;
  symbol->flags = 0;
  // Keep the load factor at or below one half.
  if (2 * (table->count + 1) > table->capacity) grow(table);
  insert_slot(table->slots, table->capacity, to_value(symbol));
  ++table->count;
  return to_value(symbol);
}

Value make_box(Value value) {
  auto* box = allocate<Box>(sizeof(Box), Type::kBox);
  box->value = value;
  return to_value(box);
}

Template* make_template(Value name, int64_t budget) {
  auto* templ = allocate<Template>(sizeof(Template), Type::kTemplate);
  templ->entry = nullptr;
  templ->code = nullptr;
  templ->name = name;
  templ->budget = budget;
  templ->constant = nullptr;
  templ->source = kFalse;
  templ->siblings = nullptr;
  templ->index = 0;
  templ->source_kind = kSourceLambda;
  templ->tier = Tier::kHost;
  templ->tier_up_requested = 0;
  return templ;
}

Closure* make_closure(Template* templ, size_t slots) {
  auto* closure = allocate<Closure>(sizeof(Closure) + slots * sizeof(Value), Type::kClosure);
  closure->header |= static_cast<uint64_t>(slots) << 8;
  closure->templ = templ;
  for (size_t i = 0; i < slots; ++i) closure->slots[i] = kUnspecified;
  return closure;
}

Value* make_value_array(size_t count) {
  auto* values = static_cast<Value*>(GC_MALLOC(count * sizeof(Value)));
  if (values == nullptr) throw Error("out of memory");
  return values;
}

int64_t list_length(Value list) {
  int64_t n = 0;
  for (; is_pair(list); list = cdr(list)) ++n;
  return list == kNil ? n : -1;
}

std::string write_string(Value v) {
  std::string out;
  write_to(out, v, /*display=*/false);
  return out;
}

std::string display_string(Value v) {
  std::string out;
  write_to(out, v, /*display=*/true);
  return out;
}

std::string write_short(Value v, size_t limit) {
  std::string text = write_string(v);
  if (text.size() > limit) text = text.substr(0, limit - 3) + "...";
  return text;
}

}  // namespace lisp
