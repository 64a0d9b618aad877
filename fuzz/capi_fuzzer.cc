// The C API (gcglue/codeheap.h) fed malformed IR and bad arguments. Every call either works or
// fails as documented (NULL or non-zero, and a message in codeheap_last_error); code compiled
// from IR this harness wrote itself is called and must compute what that IR says. Code from
// mutated or arbitrary IR is compiled, never run.
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include <spdlog/fmt/fmt.h>

#include "fuzz/check.h"
#include "fuzz/input.h"
#include "gcglue/codeheap.h"

namespace {

// A module defining `i64 @<name>(ptr %env, i64 %a)`, returning a + k.
std::string adder(const std::string& name, int64_t k) {
  return fmt::format(
      "define i64 @{}(ptr %env, i64 %a) {{\n  %r = add i64 %a, {}\n  ret i64 %r\n}}\n", name, k);
}

int64_t host_twice(int64_t a) { return 2 * a; }
int64_t literal_datum = 42;

void expect_failure(bool failed, const char* call) {
  FUZZ_CHECK(failed, "{} accepted a bad argument", call);
  FUZZ_CHECK(*codeheap_last_error() != '\0', "{} failed without a message", call);
}

class Session {
 public:
  Session(codeheap_runtime* runtime, fuzz::Input& in) : rt_(runtime), in_(in) {}

  void step() {
    switch (in_.below(12)) {
      case 0:
        compile_only(std::string(in_.bytes(512)));
        break;
      case 1:
      case 2:
        compile_only(mutated(adder("f", in_.word(2))));
        break;
      case 3:
        compile_and_call();
        break;
      case 4:
        define_and_call();
        break;
      case 5:
        host_symbol();
        break;
      case 6:
        null_arguments();
        break;
      case 7:
        dumps();
        break;
      case 8: {
        codeheap_collect_report report;
        FUZZ_CHECK(codeheap_collect(rt_, in_.coin() ? &report : nullptr) == 0, "collect: {}",
                   codeheap_last_error());
        break;
      }
      case 9:
        on_another_thread();
        break;
      case 10:
        bad_options();
        break;
      default:
        codeheap_safepoint(rt_);
        break;
    }
  }

 private:
  std::string name() {
    std::string text(in_.bytes(16));
    return text.find('\0') == std::string::npos ? text : "co";
  }

  // The template with a few bytes replaced: invalid IR, verifier errors, odd but valid IR.
  std::string mutated(std::string ir) {
    for (size_t n = 1 + in_.below(3), i = 0; i < n; ++i) {
      const size_t at = in_.below(ir.size() + 1);
      ir.replace(at, std::min(ir.size() - at, in_.below(8)), in_.bytes(8));
    }
    return ir;
  }

  void compile_only(const std::string& ir) {
    const void* literals[] = {&literal_datum};
    const size_t count = in_.below(2);
    codeheap_code* code =
        codeheap_compile(rt_, ir.c_str(), name().c_str(),
                         count ? const_cast<void* const*>(literals) : nullptr, count);
    if (code == nullptr) {
      expect_failure(true, "codeheap_compile");
      return;
    }
    // Looking things up is harmless whatever the code is.
    codeheap_symbol(rt_, code, name().c_str());
  }

  void compile_and_call() {
    const auto k = static_cast<int64_t>(in_.word(8));
    codeheap_code* code = codeheap_compile(rt_, adder("f", k).c_str(), name().c_str(), nullptr, 0);
    FUZZ_CHECK(code != nullptr, "compiling a valid module: {}", codeheap_last_error());
    const std::string entry = in_.coin() ? "f" : name();
    codeheap_closure* closure = codeheap_closure_new(rt_, code, entry.c_str(), nullptr);
    if (entry != "f") {
      expect_failure(closure == nullptr, "codeheap_closure_new of a missing function");
      return;
    }
    FUZZ_CHECK(closure != nullptr, "closure: {}", codeheap_last_error());
    const auto a = static_cast<int64_t>(in_.word(8));
    const size_t argc = in_.below(4) == 0 ? 7 + in_.below(100) : 1;
    int64_t result = 0;
    const int status = codeheap_call(closure, &a, argc, &result);
    if (argc != 1) {
      expect_failure(status != 0, "codeheap_call with too many arguments");
      return;
    }
    FUZZ_CHECK(status == 0 && result == static_cast<int64_t>(uint64_t(a) + uint64_t(k)),
               "f({}) = {}, not {} + {}", a, result, a, k);
  }

  void define_and_call() {
    const std::string function = fmt::format("fuzz_g{}", in_.below(4));
    const auto k = static_cast<int64_t>(in_.word(8));
    const bool valid = in_.below(3) != 0;
    const std::string ir = valid ? adder(function, k) : mutated(adder(function, k));
    const std::string defined = in_.below(8) == 0 ? name() : function;
    void* entry = codeheap_define(rt_, defined.c_str(), ir.c_str());
    if (entry == nullptr) {
      expect_failure(true, "codeheap_define");
      return;
    }
    if (!valid || defined != function) return;
    const auto a = static_cast<int64_t>(in_.word(8));
    const int64_t result = reinterpret_cast<int64_t (*)(void*, int64_t)>(entry)(nullptr, a);
    FUZZ_CHECK(result == static_cast<int64_t>(uint64_t(a) + uint64_t(k)),
               "{}({}) = {}, not {} + {}", function, a, result, a, k);
  }

  void host_symbol() {
    // Host names are process-wide and permanent: a few, defined again and again.
    const std::string host = fmt::format("fuzz_host{}", in_.below(4));
    const int status =
        codeheap_define_host_symbol(rt_, in_.below(8) == 0 ? name().c_str() : host.c_str(),
                                    reinterpret_cast<void*>(&host_twice));
    if (status != 0) expect_failure(true, "codeheap_define_host_symbol");
  }

  void null_arguments() {
    const std::string ir = adder("f", 1);
    const char* text = ir.c_str();
    int64_t result;
    switch (in_.below(10)) {
      case 0:
        expect_failure(!codeheap_compile(nullptr, text, "n", nullptr, 0), "compile");
        break;
      case 1:
        expect_failure(!codeheap_compile(rt_, nullptr, "n", nullptr, 0), "compile");
        break;
      case 2:
        expect_failure(!codeheap_compile(rt_, text, nullptr, nullptr, 0), "compile");
        break;
      case 3:
        expect_failure(!codeheap_compile(rt_, text, "n", nullptr, 1 + in_.below(9)),
                       "codeheap_compile with NULL literals");
        break;
      case 4:
        expect_failure(!codeheap_symbol(rt_, nullptr, "f"), "codeheap_symbol");
        break;
      case 5:
        expect_failure(!codeheap_closure_new(rt_, nullptr, "f", nullptr), "closure");
        break;
      case 6:
        expect_failure(codeheap_call(nullptr, nullptr, 0, &result) != 0, "call");
        break;
      case 7:
        expect_failure(!codeheap_define(rt_, nullptr, text), "codeheap_define");
        break;
      case 8:
        expect_failure(codeheap_define_host_symbol(rt_, nullptr, nullptr), "host");
        break;
      default:
        expect_failure(codeheap_collect(nullptr, nullptr) != 0, "codeheap_collect");
        break;
    }
  }

  void dumps() {
    for (char* text : {codeheap_stats_text(rt_), codeheap_stats_json(rt_), codeheap_map_svg(rt_)}) {
      FUZZ_CHECK(text != nullptr && *text != '\0', "an empty dump: {}", codeheap_last_error());
      codeheap_free_string(text);
    }
    // Nothing can be created under /proc: the call must fail and say so.
    const std::string path = "/proc/codeheap-fuzz/" + name();
    expect_failure(codeheap_write_map(rt_, path.c_str()) != 0, "codeheap_write_map");
  }

  void on_another_thread() {
    const auto k = static_cast<int64_t>(in_.word(2));
    std::thread([this, k] {
      FUZZ_CHECK(codeheap_register_thread(rt_) == 0, "register: {}", codeheap_last_error());
      codeheap_code* code = codeheap_compile(rt_, adder("f", k).c_str(), "thread", nullptr, 0);
      codeheap_closure* closure =
          code != nullptr ? codeheap_closure_new(rt_, code, "f", nullptr) : nullptr;
      const int64_t a = 1;
      int64_t result = 0;
      FUZZ_CHECK(
          closure != nullptr && codeheap_call(closure, &a, 1, &result) == 0 && result == 1 + k,
          "on a registered thread: {}", codeheap_last_error());
      FUZZ_CHECK(codeheap_unregister_thread(rt_) == 0, "unregister: {}", codeheap_last_error());
    }).join();
  }

  void bad_options() {
    codeheap_options options;
    codeheap_options_init(&options);
    if (in_.coin()) {
      options.log_level = "loud";
    } else {
      options.code_bytes = size_t{1} << (32 + in_.below(30));  // beyond the low 2 GiB
    }
    expect_failure(codeheap_init(&options) == nullptr, "codeheap_init with bad options");
  }

  codeheap_runtime* rt_;
  fuzz::Input& in_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static codeheap_runtime* const runtime = [] {
    fuzz::quiet_logs({"", "jit", "gc"});
    codeheap_options options;
    codeheap_options_init(&options);
    // Small enough that big modules fill it (collect, retry, fail cleanly).
    options.code_bytes = size_t{1} << 20;
    options.read_only_bytes = size_t{256} << 10;
    options.data_bytes = size_t{256} << 10;
    codeheap_runtime* created = codeheap_init(&options);
    FUZZ_CHECK(created != nullptr, "codeheap_init: {}", codeheap_last_error());
    return created;
  }();
  fuzz::Input in(data, size);
  Session session(runtime, in);
  for (int steps = 0; steps < 16 && !in.empty(); ++steps) session.step();
  return 0;
}
