/* A tiny language runtime on codeheap's C API, built in a workspace of its own: it compiles a
 * function from LLVM IR into the garbage-collected code heap, calls it through a closure, drops
 * the closure and lets the collector recycle the code. */
#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS
#include <gc/gc.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "gcglue/codeheap.h"

/* A closure entry: the environment first (here, a boxed factor), then the arguments. */
static const char* kScale =
    "define i64 @scale(ptr %env, i64 %x) {\n"
    "  %k = load i64, ptr %env\n"
    "  %r = mul i64 %x, %k\n"
    "  ret i64 %r\n"
    "}\n";

static int fail(const char* what) {
  fprintf(stderr, "embedder: %s failed: %s\n", what, codeheap_last_error());
  return 1;
}

/* On a thread of its own (registered, as every thread that runs JIT code must be): compiles
 * `scale`, makes a closure over it with factor 6 and calls it with 7. The code object and the
 * closure live in the GC heap; when the thread is gone, nothing refers to them any more. */
struct job {
  codeheap_runtime* runtime;
  int64_t result;
  int failed;
};

static void* scale_7_by_6(void* p) {
  struct job* job = p;
  job->failed = 1;
  if (codeheap_register_thread(job->runtime) != 0) return NULL;
  codeheap_code* code = codeheap_compile(job->runtime, kScale, "scale", NULL, 0);
  int64_t* factor = GC_MALLOC_ATOMIC(sizeof *factor);
  *factor = 6;
  codeheap_closure* times6 =
      code ? codeheap_closure_new(job->runtime, code, "scale", factor) : NULL;
  int64_t arg = 7;
  job->failed = times6 == NULL || codeheap_call(times6, &arg, 1, &job->result) != 0;
  if (job->failed) fail("compiling or calling scale");
  codeheap_unregister_thread(job->runtime);
  return NULL;
}

int main(void) {
  codeheap_options options;
  codeheap_options_init(&options);
  options.log_level = "warn";
  codeheap_runtime* runtime = codeheap_init(&options);
  if (runtime == NULL) return fail("codeheap_init");

  struct job job = {runtime, 0, 1};
  pthread_t thread;
  if (pthread_create(&thread, NULL, scale_7_by_6, &job) != 0) return 1;
  pthread_join(thread, NULL);
  if (job.failed) return 1;
  printf("scale(7) with factor 6 = %lld\n", (long long)job.result);

  /* The collector finalizes the unreachable code object; its machine code is retired to the
   * code heap's quarantine and reclaimed once no registered thread's stack points into it. */
  codeheap_collect_report report;
  if (codeheap_collect(runtime, &report) != 0) return fail("codeheap_collect");
  printf("collected: %zu code object(s) finalized, %zu byte(s) reclaimed\n", report.finalized,
         report.bytes_reclaimed);

  codeheap_shutdown(runtime);
  return job.result == 42 ? 0 : 1;
}
