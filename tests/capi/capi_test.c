/* The C API from C11: compile, make closures, call, redefine, collect, report errors, threads.
 * Prints one line per check and "N passed, N failed" at the end; exits non-zero on failure. */
#define _POSIX_C_SOURCE 200809L /* fork, waitpid, _exit under -std=c11 */
#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS
#include <gc/gc.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gcglue/codeheap.h"

static int passed, failed;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond) {                                                                \
      ++passed;                                                                \
    } else {                                                                   \
      ++failed;                                                                \
      printf("FAILED %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
             codeheap_last_error());                                           \
    }                                                                          \
  } while (0)

static const char* kAdder =
    "define i64 @add(ptr %env, i64 %x) {\n"
    "  %k = load i64, ptr %env\n"
    "  %r = add i64 %x, %k\n"
    "  ret i64 %r\n"
    "}\n";

static const char* kGreeting =
    "define ptr @greeting(ptr %%env) {\n"
    "  ret ptr inttoptr (i64 %llu to ptr)\n"
    "}\n";

static const char* kCaller =
    "declare i64 @version()\n"
    "define i64 @ask(ptr %env) {\n"
    "  %v = call i64 @version()\n"
    "  ret i64 %v\n"
    "}\n";

static int64_t host_twice(int64_t x) { return 2 * x; }

static const char* kUsesHost =
    "declare i64 @host_twice(i64)\n"
    "define i64 @quad(ptr %env, i64 %x) {\n"
    "  %a = call i64 @host_twice(i64 %x)\n"
    "  %b = call i64 @host_twice(i64 %a)\n"
    "  ret i64 %b\n"
    "}\n";

static const char* kSubtracter =
    "define i64 @sub(ptr %env, i64 %x) {\n"
    "  %k = load i64, ptr %env\n"
    "  %r = sub i64 %x, %k\n"
    "  ret i64 %r\n"
    "}\n";

/* In a child forked after the parent compiled, once the parent has compiled again (a byte on
 * `go`): the parent's runtime refuses to compile (its code heap is not mapped here; it would
 * have handed out the block the parent just filled), and a new runtime compiles and runs code.
 * Returns 0 if so, else the number of the failed step. */
static int use_a_new_runtime_after_fork(codeheap_runtime* inherited,
                                        const codeheap_options* options, int go) {
  char byte;
  if (read(go, &byte, 1) != 1) return 1;
  if (codeheap_compile(inherited, kAdder, "in-child", NULL, 0) != NULL) return 2;
  if (strstr(codeheap_last_error(), "fork") == NULL) return 3;
  codeheap_runtime* runtime = codeheap_init(options);
  if (runtime == NULL) return 4;
  codeheap_code* code = codeheap_compile(runtime, kAdder, "child", NULL, 0);
  int64_t* env = GC_MALLOC_ATOMIC(sizeof(int64_t));
  if (code == NULL || env == NULL) return 5;
  *env = 1000;
  codeheap_closure* closure = codeheap_closure_new(runtime, code, "add", env);
  int64_t arg = 7, result = 0;
  if (closure == NULL || codeheap_call(closure, &arg, 1, &result) != 0 || result != 1007) return 6;
  if (codeheap_collect(runtime, NULL) != 0) return 7;
  if (codeheap_call(closure, &arg, 1, &result) != 0 || result != 1007) return 8;
  codeheap_shutdown(runtime);
  return 0;
}

/* About %d bytes of code (trap bytes jumped over) returning %d. */
static const char* kPadded =
    "define i64 @padded(ptr %%env) {\n"
    "  call void asm sideeffect \"jmp 1f\\0A.skip %d, 0xcc\\0A1:\", \"\"()\n"
    "  ret i64 %d\n"
    "}\n";

/* A 1 MiB code arena: compiling and dropping 3,000 modules of 4 KiB collects by itself, a module
 * larger than the arena fails with the numbers, and no_fault_reporter leaves the signals alone.
 * Runs first: once a runtime has installed the reporter, it stays installed. */
static void check_a_small_heap(void) {
  codeheap_options options;
  codeheap_options_init(&options);
  options.code_bytes = 1u << 20;
  options.read_only_bytes = 1u << 20;
  options.data_bytes = 1u << 20;
  options.no_fault_reporter = 1;
  codeheap_runtime* runtime = codeheap_init(&options);
  CHECK(runtime != NULL);
  if (runtime == NULL) return;
  CHECK(signal(SIGILL, SIG_DFL) == SIG_DFL);
  char ir[512];
  int compiled = 0;
  for (int i = 0; i < 3000; ++i) {
    snprintf(ir, sizeof ir, kPadded, 4000, i);
    compiled += codeheap_compile(runtime, ir, "padded", NULL, 0) != NULL;
  }
  CHECK(compiled == 3000);
  char* json = codeheap_stats_json(runtime);
  CHECK(json != NULL && strstr(json, "\"full_heap_collections\": 0") == NULL);
  codeheap_free_string(json);
  snprintf(ir, sizeof ir, kPadded, 2 << 20, 0);
  CHECK(codeheap_compile(runtime, ir, "too_big", NULL, 0) == NULL);
  CHECK(strstr(codeheap_last_error(), "requested") != NULL);
  CHECK(strstr(codeheap_last_error(), "largest free block") != NULL);
  codeheap_shutdown(runtime);
}

struct worker_args {
  codeheap_runtime* runtime;
  int ok;
};

static void* worker(void* p) {
  struct worker_args* args = p;
  if (codeheap_register_thread(args->runtime) != 0) return NULL;
  codeheap_code* code = codeheap_compile(args->runtime, kAdder, "worker", NULL, 0);
  int64_t* env = GC_MALLOC_ATOMIC(sizeof(int64_t));
  *env = 100;
  codeheap_closure* closure = codeheap_closure_new(args->runtime, code, "add", env);
  int64_t arg = 5, result = 0;
  args->ok = closure != NULL && codeheap_call(closure, &arg, 1, &result) == 0 && result == 105;
  codeheap_collect(args->runtime, NULL);
  if (codeheap_unregister_thread(args->runtime) != 0) args->ok = 0;
  return NULL;
}

int main(void) {
  check_a_small_heap();
  codeheap_options options;
  codeheap_options_init(&options);
  options.code_bytes = 8u << 20;
  options.read_only_bytes = 2u << 20;
  options.data_bytes = 2u << 20;
  options.log_level = "no-such-level";
  CHECK(codeheap_init(&options) == NULL);
  CHECK(strstr(codeheap_last_error(), "log level") != NULL);
  options.log_level = "error";
  codeheap_runtime* runtime = codeheap_init(&options);
  CHECK(runtime != NULL);
  if (runtime == NULL) return 1;

  /* A closure over compiled code. */
  codeheap_code* code = codeheap_compile(runtime, kAdder, "adder", NULL, 0);
  CHECK(code != NULL);
  int64_t* env = GC_MALLOC_ATOMIC(sizeof(int64_t));
  *env = 40;
  codeheap_closure* closure = codeheap_closure_new(runtime, code, "add", env);
  CHECK(closure != NULL);
  int64_t arg = 2, result = 0;
  CHECK(codeheap_call(closure, &arg, 1, &result) == 0 && result == 42);
  CHECK(codeheap_call(closure, &arg, 7, &result) != 0);
  CHECK(strstr(codeheap_last_error(), "at most 6") != NULL);

  /* A literal pool keeps a string the code embeds. */
  char* text = GC_MALLOC_ATOMIC(16);
  strcpy(text, "hello from C");
  char ir[512];
  snprintf(ir, sizeof ir, kGreeting, (unsigned long long)(uintptr_t)text);
  void* literals[1] = {text};
  codeheap_code* greeting = codeheap_compile(runtime, ir, "greeting", literals, 1);
  CHECK(greeting != NULL);
  const char* (*greet)(void*) =
      (const char* (*)(void*))codeheap_symbol(runtime, greeting, "greeting");
  CHECK(greet != NULL && strcmp(greet(NULL), "hello from C") == 0);

  /* Host functions. */
  CHECK(codeheap_define_host_symbol(runtime, "host_twice", (void*)&host_twice) == 0);
  codeheap_code* quad_code = codeheap_compile(runtime, kUsesHost, "quad", NULL, 0);
  CHECK(quad_code != NULL);
  codeheap_closure* quad = codeheap_closure_new(runtime, quad_code, "quad", NULL);
  arg = 10;
  CHECK(quad != NULL && codeheap_call(quad, &arg, 1, &result) == 0 && result == 40);

  /* Redefinition reaches a caller compiled earlier. */
  CHECK(codeheap_define(runtime, "version", "define i64 @version() {\n  ret i64 1\n}\n") != NULL);
  codeheap_code* caller = codeheap_compile(runtime, kCaller, "caller", NULL, 0);
  codeheap_closure* ask = codeheap_closure_new(runtime, caller, "ask", NULL);
  CHECK(ask != NULL && codeheap_call(ask, NULL, 0, &result) == 0 && result == 1);
  CHECK(codeheap_define(runtime, "version", "define i64 @version() {\n  ret i64 2\n}\n") != NULL);
  CHECK(codeheap_call(ask, NULL, 0, &result) == 0 && result == 2);

  /* Errors are messages, not aborts. */
  CHECK(codeheap_compile(runtime, "define i64 @broken( {", "broken", NULL, 0) == NULL);
  CHECK(strstr(codeheap_last_error(), "broken") != NULL);
  CHECK(codeheap_closure_new(runtime, code, "no_such_entry", NULL) == NULL);
  CHECK(strstr(codeheap_last_error(), "no_such_entry") != NULL);
  CHECK(codeheap_compile(runtime, kAdder, "adder", NULL, 3) == NULL);

  /* Another thread compiles and calls. */
  struct worker_args args = {runtime, 0};
  pthread_t thread;
  CHECK(pthread_create(&thread, NULL, worker, &args) == 0);
  pthread_join(thread, NULL);
  CHECK(args.ok);

  /* Collection, then the stats dumps. */
  codeheap_collect_report report;
  CHECK(codeheap_collect(runtime, &report) == 0);
  CHECK(codeheap_call(closure, &arg, 1, &result) == 0 && result == 50); /* still reachable */
  char* json = codeheap_stats_json(runtime);
  CHECK(json != NULL && strstr(json, "\"gc\"") != NULL && strstr(json, "\"arenas\"") != NULL);
  codeheap_free_string(json);
  char* stats = codeheap_stats_text(runtime);
  CHECK(stats != NULL && strstr(stats, "live code objects") != NULL);
  codeheap_free_string(stats);
  char* map = codeheap_map_svg(runtime);
  CHECK(map != NULL && strstr(map, "<svg") != NULL && strstr(map, "adder") != NULL);
  codeheap_free_string(map);
  CHECK(codeheap_map_svg(NULL) == NULL && strstr(codeheap_last_error(), "NULL") != NULL);
  CHECK(codeheap_write_map(runtime, "/nonexistent-dir/map.svg") != 0);
  CHECK(strstr(codeheap_last_error(), "/nonexistent-dir/map.svg") != NULL);

  /* fork(): the child runs code of its own; the parent's code, old and new, is untouched. */
  int go[2];
  CHECK(pipe(go) == 0);
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) _exit(use_a_new_runtime_after_fork(runtime, &options, go[0]));
  codeheap_code* sub_code = codeheap_compile(runtime, kSubtracter, "after-fork", NULL, 0);
  codeheap_closure* sub = codeheap_closure_new(runtime, sub_code, "sub", env);
  arg = 50;
  CHECK(sub != NULL && codeheap_call(sub, &arg, 1, &result) == 0 && result == 10);
  CHECK(write(go[1], "g", 1) == 1);
  int status = -1;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) printf("child status %d\n", status);
  CHECK(sub != NULL && codeheap_call(sub, &arg, 1, &result) == 0 && result == 10);
  arg = 2;
  CHECK(codeheap_call(closure, &arg, 1, &result) == 0 && result == 42);
  arg = 10;
  CHECK(codeheap_call(quad, &arg, 1, &result) == 0 && result == 40);
  CHECK(codeheap_call(ask, NULL, 0, &result) == 0 && result == 2);
  close(go[0]);
  close(go[1]);

  codeheap_shutdown(runtime);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
