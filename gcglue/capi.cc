// The C API (gcglue/codeheap.h) over gc::Runtime: errors become thread-local messages.
#include "gcglue/codeheap.h"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "codeheap/log.h"
#include "gcglue/runtime.h"

struct codeheap_runtime {
  std::unique_ptr<codeheap::gc::Runtime> runtime;
  // The C claim hook, which the runtime's reporter calls through claim_fault; stays in place
  // until the runtime (and its reporter's watch) is gone.
  int (*fault_claim)(int, void*, void*, void*) = nullptr;
  void* fault_claim_data = nullptr;
};

namespace {

thread_local std::string t_last_error;

void clear_error() { t_last_error.clear(); }

template <typename T>
T fail(std::string message, T value) {
  t_last_error = std::move(message);
  return value;
}

// Records `error` and returns true if there was one.
bool failed(llvm::Error error) {
  if (!error) return false;
  t_last_error = llvm::toString(std::move(error));
  return true;
}

char* copy_string(const std::string& text) {
  char* copy = static_cast<char*>(std::malloc(text.size() + 1));
  if (copy == nullptr) return fail("out of memory copying a string", nullptr);
  std::memcpy(copy, text.c_str(), text.size() + 1);
  return copy;
}

// codeheap::gc::FaultClaim over the C hook of `data`, a codeheap_runtime.
bool claim_fault(int signal, siginfo_t* info, void* context, void* data) {
  const auto* runtime = static_cast<const codeheap_runtime*>(data);
  return runtime != nullptr && runtime->fault_claim != nullptr &&
         runtime->fault_claim(signal, info, context, runtime->fault_claim_data) != 0;
}

bool set_log_level(const char* name) {
  spdlog::level::level_enum level = spdlog::level::from_str(name);
  // from_str answers "off" for anything it does not know.
  if (level == spdlog::level::off && std::strcmp(name, "off") != 0) return false;
  for (const char* component : {"", "jit", "gc"}) codeheap::logger(component)->set_level(level);
  return true;
}

}  // namespace

extern "C" {

const char* codeheap_last_error(void) { return t_last_error.c_str(); }

void codeheap_options_init(codeheap_options* options) {
  if (options != nullptr) *options = codeheap_options{};
}

codeheap_runtime* codeheap_init(const codeheap_options* options) {
  clear_error();
  auto handle = std::make_unique<codeheap_runtime>();
  codeheap::gc::RuntimeOptions runtime_options;
  if (options != nullptr) {
    if (options->code_bytes) runtime_options.heap.code_bytes = options->code_bytes;
    if (options->read_only_bytes) runtime_options.heap.read_only_bytes = options->read_only_bytes;
    if (options->data_bytes) runtime_options.heap.data_bytes = options->data_bytes;
    if (options->log_level != nullptr && !set_log_level(options->log_level)) {
      return fail("codeheap_init: unknown log level '" + std::string(options->log_level) +
                      "' (trace, debug, info, warn, error, critical, off)",
                  nullptr);
    }
    runtime_options.faults.enabled = options->no_fault_reporter == 0;
    if (options->fault_claim != nullptr) {
      handle->fault_claim = options->fault_claim;
      handle->fault_claim_data = options->fault_claim_data;
      runtime_options.faults.claim = &claim_fault;
      runtime_options.faults.claim_data = handle.get();
    }
  }
  auto runtime = codeheap::gc::Runtime::create(runtime_options);
  if (!runtime) return fail("codeheap_init: " + llvm::toString(runtime.takeError()), nullptr);
  handle->runtime = std::move(*runtime);
  return handle.release();
}

void codeheap_shutdown(codeheap_runtime* runtime) {
  clear_error();
  delete runtime;
}

codeheap_code* codeheap_compile(codeheap_runtime* runtime, const char* ir, const char* name,
                                void* const* literals, size_t literal_count) {
  clear_error();
  if (runtime == nullptr || ir == nullptr || name == nullptr) {
    return fail("codeheap_compile: runtime, ir and name must not be NULL", nullptr);
  }
  if (literals == nullptr && literal_count != 0) {
    return fail("codeheap_compile: literals is NULL but literal_count is not 0", nullptr);
  }
  auto code = runtime->runtime->compile(
      ir, name, llvm::ArrayRef<void*>(const_cast<void**>(literals), literal_count));
  if (!code) return fail(llvm::toString(code.takeError()), nullptr);
  return reinterpret_cast<codeheap_code*>(*code);
}

void* codeheap_symbol(codeheap_runtime* runtime, codeheap_code* code, const char* symbol) {
  clear_error();
  if (runtime == nullptr || code == nullptr || symbol == nullptr) {
    return fail("codeheap_symbol: arguments must not be NULL", nullptr);
  }
  auto address =
      runtime->runtime->symbol(reinterpret_cast<codeheap::gc::CodeObject*>(code), symbol);
  if (!address) return fail(llvm::toString(address.takeError()), nullptr);
  return *address;
}

codeheap_closure* codeheap_closure_new(codeheap_runtime* runtime, codeheap_code* code,
                                       const char* entry, void* env) {
  clear_error();
  if (runtime == nullptr || code == nullptr || entry == nullptr) {
    return fail("codeheap_closure_new: runtime, code and entry must not be NULL", nullptr);
  }
  auto closure =
      runtime->runtime->make_closure(reinterpret_cast<codeheap::gc::CodeObject*>(code), entry, env);
  if (!closure) return fail(llvm::toString(closure.takeError()), nullptr);
  return reinterpret_cast<codeheap_closure*>(*closure);
}

int codeheap_call(codeheap_closure* handle, const int64_t* args, size_t argc, int64_t* result) {
  clear_error();
  auto* closure = reinterpret_cast<codeheap::gc::Closure*>(handle);
  if (closure == nullptr || result == nullptr || (argc > 0 && args == nullptr)) {
    return fail("codeheap_call: closure, result (and args when argc > 0) must not be NULL", 1);
  }
  void* env = closure->env;
  using I = int64_t;
  switch (argc) {
    case 0:
      *result = reinterpret_cast<I (*)(void*)>(closure->entry)(env);
      return 0;
    case 1:
      *result = reinterpret_cast<I (*)(void*, I)>(closure->entry)(env, args[0]);
      return 0;
    case 2:
      *result = reinterpret_cast<I (*)(void*, I, I)>(closure->entry)(env, args[0], args[1]);
      return 0;
    case 3:
      *result =
          reinterpret_cast<I (*)(void*, I, I, I)>(closure->entry)(env, args[0], args[1], args[2]);
      return 0;
    case 4:
      *result = reinterpret_cast<I (*)(void*, I, I, I, I)>(closure->entry)(env, args[0], args[1],
                                                                           args[2], args[3]);
      return 0;
    case 5:
      *result = reinterpret_cast<I (*)(void*, I, I, I, I, I)>(closure->entry)(
          env, args[0], args[1], args[2], args[3], args[4]);
      return 0;
    case 6:
      *result = reinterpret_cast<I (*)(void*, I, I, I, I, I, I)>(closure->entry)(
          env, args[0], args[1], args[2], args[3], args[4], args[5]);
      return 0;
    default:
      return fail("codeheap_call: at most 6 arguments, got " + std::to_string(argc), 1);
  }
}

void* codeheap_define(codeheap_runtime* runtime, const char* name, const char* ir) {
  clear_error();
  if (runtime == nullptr || name == nullptr || ir == nullptr) {
    return fail("codeheap_define: arguments must not be NULL", nullptr);
  }
  auto stub = runtime->runtime->define_function(name, ir);
  if (!stub) return fail(llvm::toString(stub.takeError()), nullptr);
  return *stub;
}

int codeheap_define_host_symbol(codeheap_runtime* runtime, const char* name, void* address) {
  clear_error();
  if (runtime == nullptr || name == nullptr) {
    return fail("codeheap_define_host_symbol: runtime and name must not be NULL", 1);
  }
  return failed(runtime->runtime->define_host_symbol(name, address)) ? 1 : 0;
}

int codeheap_collect(codeheap_runtime* runtime, codeheap_collect_report* report) {
  clear_error();
  if (runtime == nullptr) return fail("codeheap_collect: runtime is NULL", 1);
  codeheap::gc::CollectReport result = runtime->runtime->collect();
  if (report != nullptr) {
    *report = codeheap_collect_report{
        result.finalized, result.modules_retired, result.reclaim.reclaimed_blocks,
        result.reclaim.reclaimed_bytes, result.reclaim.still_referenced_blocks};
  }
  return 0;
}

void codeheap_safepoint(codeheap_runtime* runtime) {
  clear_error();
  if (runtime != nullptr) runtime->runtime->safepoint();
}

int codeheap_register_thread(codeheap_runtime* runtime) {
  clear_error();
  if (runtime == nullptr) return fail("codeheap_register_thread: runtime is NULL", 1);
  return failed(runtime->runtime->register_current_thread()) ? 1 : 0;
}

int codeheap_unregister_thread(codeheap_runtime* runtime) {
  clear_error();
  if (runtime == nullptr) return fail("codeheap_unregister_thread: runtime is NULL", 1);
  return failed(runtime->runtime->unregister_current_thread()) ? 1 : 0;
}

char* codeheap_stats_text(codeheap_runtime* runtime) {
  clear_error();
  if (runtime == nullptr) return fail("codeheap_stats_text: runtime is NULL", nullptr);
  return copy_string(runtime->runtime->dump_text());
}

char* codeheap_stats_json(codeheap_runtime* runtime) {
  clear_error();
  if (runtime == nullptr) return fail("codeheap_stats_json: runtime is NULL", nullptr);
  return copy_string(runtime->runtime->dump_json());
}

char* codeheap_map_svg(codeheap_runtime* runtime) {
  clear_error();
  if (runtime == nullptr) return fail("codeheap_map_svg: runtime is NULL", nullptr);
  return copy_string(runtime->runtime->heap().dump_svg());
}

int codeheap_write_map(codeheap_runtime* runtime, const char* path) {
  clear_error();
  if (runtime == nullptr || path == nullptr) {
    return fail("codeheap_write_map: runtime and path must not be NULL", 1);
  }
  auto written = codeheap::write_text_file(path, runtime->runtime->heap().dump_svg());
  if (!written) return fail("codeheap_write_map: " + written.error().message, 1);
  return 0;
}

void codeheap_free_string(char* string) { std::free(string); }

}  // extern "C"
