// The Lisp reader and compiler on arbitrary bytes: every form read is compiled, as a top-level
// definition or as a thunk, and never run. Syntax and compile errors are lisp::Errors; anything
// else (a crash, an ASan report, another exception) is a finding. The baseline tier compiles
// unless LISP_TIER_UP=0 selects LLVM.
#include <cstdint>
#include <string_view>

#include "examples/lisp/compiler.h"
#include "examples/lisp/error.h"
#include "examples/lisp/reader.h"
#include "fuzz/lisp_runtime.h"

namespace {

void compile(lisp::Runtime& runtime, lisp::Value form) {
  static const lisp::Value define = lisp::intern("define"), lambda = lisp::intern("lambda");
  try {
    if (lisp::is_pair(form) && lisp::car(form) == define) {
      const lisp::Definition d = lisp::parse_definition(form);
      if (!d.has_value) return;
      if (lisp::is_pair(d.value_form) && lisp::car(d.value_form) == lambda) {
        lisp::compile_lambda(runtime, d.value_form, d.name, "fuzz:define");
      } else {
        lisp::compile_thunk(runtime, d.value_form, "fuzz:define");
      }
    } else {
      lisp::compile_thunk(runtime, form, "fuzz:expr");
    }
  } catch (const lisp::Error&) {
    // Bad syntax, or a program the compiler refuses: what the input is for.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lisp::Runtime& runtime = fuzz::lisp_runtime(lisp::kTierUpNever);
  lisp::Reader reader(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  try {
    while (const auto form = reader.next()) compile(runtime, *form);
  } catch (const lisp::SyntaxError&) {
  }
  runtime.safepoint();
  return 0;
}
