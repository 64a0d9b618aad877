/* codeheap C API: garbage-collected JIT code for language runtimes written in C.
 *
 * One runtime owns a low-address code heap, an LLVM engine and a thread registry; it uses the
 * process's Boehm GC (libgc). Compile LLVM IR text into a *code object* (a Boehm-heap object),
 * make *closures* over its functions, drop them, and the collector recycles the code once no
 * object and no thread needs it. See docs/embedding.md.
 *
 * Errors: every call that can fail returns NULL (pointers) or a non-zero int, and leaves a
 * message for the calling thread in codeheap_last_error(). Nothing aborts the process.
 *
 * A full code heap: codeheap_compile and codeheap_define collect garbage and retry once before
 * they fail (the message then names the requested, free and largest free bytes).
 *
 * Crashes: unless options.no_fault_reporter is set, a SIGSEGV, SIGBUS, SIGILL, SIGTRAP or SIGFPE
 * in JIT code writes one line naming the code (owner, function, state) to stderr before the
 * process dies of it; see docs/embedding.md for how it chains with handlers of your own.
 *
 * Threads: call codeheap_register_thread() on every thread (other than the one that created
 * the runtime) before it runs JIT code or touches GC objects, and
 * codeheap_unregister_thread() before it exits.
 *
 * fork(): a child inherits none of a runtime's code memory, so it can never change its parent's
 * code. In the child, codeheap_compile on an inherited runtime fails ("... parent of this forked
 * process ..."), and calling its closures crashes the child; leave it alone. The child may exec,
 * or codeheap_init a new runtime and use it (docs/design.md, "fork()").
 *
 * Calling convention of closures: the entry function takes the environment pointer first,
 * then up to 6 int64_t arguments, and returns int64_t:
 *   define i64 @f(ptr %env, i64 %a, i64 %b) { ... }
 */
#ifndef CODEHEAP_GCGLUE_CODEHEAP_H_
#define CODEHEAP_GCGLUE_CODEHEAP_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct codeheap_runtime codeheap_runtime;
typedef struct codeheap_code codeheap_code;       /* a code object; lives in the GC heap */
typedef struct codeheap_closure codeheap_closure; /* a closure; lives in the GC heap */

typedef struct codeheap_options {
  size_t code_bytes;      /* executable arena; 0 selects the default (256 MiB) */
  size_t read_only_bytes; /* 0 selects the default (64 MiB) */
  size_t data_bytes;      /* 0 selects the default (192 MiB) */
  const char* log_level;  /* "trace".."off" for every codeheap logger; NULL keeps SPDLOG_LEVEL */
  int no_fault_reporter;  /* non-zero: do not install the fatal-signal reporter */
  /* If set, sees every fault signal first, in the signal handler (siginfo is a siginfo_t*,
   * ucontext a ucontext_t*), with fault_claim_data; returns non-zero if it handled the fault,
   * which then resumes. For a SIGSEGV guard page or safepoint poll of your own in JIT code. */
  int (*fault_claim)(int signal, void* siginfo, void* ucontext, void* data);
  void* fault_claim_data;
} codeheap_options;

typedef struct codeheap_collect_report {
  size_t finalized;        /* code objects finalized by this collection */
  size_t modules_retired;  /* modules moved to quarantine */
  size_t blocks_reclaimed; /* quarantined blocks returned to the free list */
  size_t bytes_reclaimed;
  size_t blocks_still_referenced; /* kept: some thread's stack or registers point into them */
} codeheap_collect_report;

/* The message of the calling thread's last failed call ("" if none). Valid until the next
 * codeheap call on this thread. */
const char* codeheap_last_error(void);

void codeheap_options_init(codeheap_options* options);

/* Creates a runtime; the calling thread is registered. NULL on failure. */
codeheap_runtime* codeheap_init(const codeheap_options* options);
/* Destroys the runtime. Code objects still alive become unusable. */
void codeheap_shutdown(codeheap_runtime* runtime);

/* Compiles LLVM IR text. `literals` (may be NULL when count is 0) are GC pointers the code
 * embeds; they stay alive as long as the code object. NULL on failure. */
codeheap_code* codeheap_compile(codeheap_runtime* runtime, const char* ir, const char* name,
                                void* const* literals, size_t literal_count);
/* The address of function or global `symbol` of `code`. NULL on failure. */
void* codeheap_symbol(codeheap_runtime* runtime, codeheap_code* code, const char* symbol);

/* A closure over function `entry` of `code` with environment `env`. NULL on failure. */
codeheap_closure* codeheap_closure_new(codeheap_runtime* runtime, codeheap_code* code,
                                       const char* entry, void* env);
/* Calls closure(env, args[0..argc-1]); argc at most 6. Returns 0 and stores the result in
 * *result, or returns non-zero for a bad argc or a NULL closure. */
int codeheap_call(codeheap_closure* closure, const int64_t* args, size_t argc, int64_t* result);

/* Defines or redefines the global function `name` (the IR must define it). Code compiled
 * earlier that calls `name` reaches the new body. Returns the stable entry address or NULL. */
void* codeheap_define(codeheap_runtime* runtime, const char* name, const char* ir);
/* Makes a host function or datum visible to IR under `name`. 0 on success. */
int codeheap_define_host_symbol(codeheap_runtime* runtime, const char* name, void* address);

/* Full collection, finalization and reclamation; `report` may be NULL. 0 on success. */
int codeheap_collect(codeheap_runtime* runtime, codeheap_collect_report* report);
/* Runs pending finalizers and retires their code (cheap when nothing is pending). */
void codeheap_safepoint(codeheap_runtime* runtime);

int codeheap_register_thread(codeheap_runtime* runtime);
int codeheap_unregister_thread(codeheap_runtime* runtime);

/* The heap-stats dump. Free the returned string with codeheap_free_string. NULL on failure. */
char* codeheap_stats_text(codeheap_runtime* runtime);
char* codeheap_stats_json(codeheap_runtime* runtime);
/* The heap map: the code heap as an SVG picture (docs/heap-stats.md). Free the returned string
 * with codeheap_free_string. NULL on failure. */
char* codeheap_map_svg(codeheap_runtime* runtime);
/* Writes the heap map to `path` (created or truncated). 0 on success; on failure (e.g. a path
 * that cannot be written) the message names the path and the reason, and the heap is as it
 * was. */
int codeheap_write_map(codeheap_runtime* runtime, const char* path);
void codeheap_free_string(char* string);

#ifdef __cplusplus
}
#endif

#endif /* CODEHEAP_GCGLUE_CODEHEAP_H_ */
