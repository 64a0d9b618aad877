/* jit/codeheap_llvm.h from C11, with LLVM-C alone: MCJIT and LLJIT on a code heap, without Boehm.
 * Each engine compiles a module with a dense switch (a jump table in read-only data) and a
 * self-recursive function under the Small code model, runs them, checks that every function lies
 * below 2 GiB and that its unwind info is registered, and is torn down: its blocks go to
 * quarantine, then, after a reclaim call, to the free list. Bad input gets a message and leaves
 * the heap as it was. Prints one line per failed check and "N passed, N failed". */
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/ExecutionEngine.h>
#include <llvm-c/IRReader.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jit/codeheap_llvm.h"

static int passed, failed;

static void check(int ok, const char* what, int line) {
  if (ok) {
    ++passed;
    return;
  }
  ++failed;
  printf("FAILED %s:%d: %s (last error: %s)\n", __FILE__, line, what, codeheap_llvm_last_error());
}
#define CHECK(cond) check((cond) != 0, #cond, __LINE__)

/* A failed call: non-zero or NULL result, a message naming the entry point. */
#define CHECK_REFUSED(call, who) CHECK((call) && strstr(codeheap_llvm_last_error(), who) != NULL)

/* The unwinder's own lookup (libgcc): non-NULL once a function's .eh_frame is registered. */
struct dwarf_eh_bases {
  void* tbase;
  void* dbase;
  void* func;
};
extern const void* _Unwind_Find_FDE(void* pc, struct dwarf_eh_bases* bases);

static int has_unwind_info(uint64_t pc) {
  struct dwarf_eh_bases bases;
  return _Unwind_Find_FDE((void*)(uintptr_t)(pc + 1), &bases) != NULL;
}

static const char* kModule =
    "define i32 @classify(i32 %x) #0 {\n"
    "entry:\n"
    "  switch i32 %x, label %other [\n"
    "    i32 0, label %a\n    i32 1, label %b\n    i32 2, label %c\n    i32 3, label %d\n"
    "    i32 4, label %e\n    i32 5, label %f\n    i32 6, label %g\n    i32 7, label %h\n"
    "  ]\n"
    "a:\n  ret i32 17\nb:\n  ret i32 4\nc:\n  ret i32 99\nd:\n  ret i32 -3\n"
    "e:\n  ret i32 250\nf:\n  ret i32 8\ng:\n  ret i32 61\nh:\n  ret i32 1000\n"
    "other:\n  ret i32 -1\n"
    "}\n"
    "define i64 @fib(i64 %n) #0 {\n"
    "entry:\n"
    "  %small = icmp slt i64 %n, 2\n"
    "  br i1 %small, label %base, label %recurse\n"
    "base:\n  ret i64 %n\n"
    "recurse:\n"
    "  %n1 = sub i64 %n, 1\n  %f1 = call i64 @fib(i64 %n1)\n"
    "  %n2 = sub i64 %n, 2\n  %f2 = call i64 @fib(i64 %n2)\n"
    "  %sum = add i64 %f1, %f2\n  ret i64 %sum\n"
    "}\n"
    "attributes #0 = { uwtable }\n";

static const int kClassified[] = {17, 4, 99, -3, 250, 8, 61, 1000, -1, -1};
static const uint64_t kLow = (uint64_t)1 << 31;

static LLVMModuleRef parse(LLVMContextRef context, const char* name) {
  LLVMMemoryBufferRef buffer =
      LLVMCreateMemoryBufferWithMemoryRangeCopy(kModule, strlen(kModule), name);
  LLVMModuleRef module = NULL;
  char* message = NULL;
  if (LLVMParseIRInContext(context, buffer, &module, &message) != 0) { /* takes the buffer */
    printf("cannot parse the module: %s\n", message);
    LLVMDisposeMessage(message);
    return NULL;
  }
  return module;
}

/* The module's functions, called and located. */
static void check_functions(uint64_t classify, uint64_t fib) {
  CHECK(classify != 0 && classify < kLow);
  CHECK(fib != 0 && fib < kLow);
  if (classify == 0 || fib == 0) return;
  int32_t (*classify_fn)(int32_t) = (int32_t (*)(int32_t))(uintptr_t)classify;
  int ok = 1;
  for (int32_t i = 0; i < 10; ++i) ok &= classify_fn(i) == kClassified[i];
  CHECK(ok);
  CHECK(((int64_t (*)(int64_t))(uintptr_t)fib)(20) == 6765);
  CHECK(has_unwind_info(classify) && has_unwind_info(fib));
}

static codeheap_llvm_stats stats_of(codeheap_llvm_heap* heap) {
  codeheap_llvm_stats stats;
  memset(&stats, 0, sizeof stats);
  CHECK(codeheap_llvm_heap_stats(heap, &stats) == 0);
  return stats;
}

static int same_stats(codeheap_llvm_heap* heap, const codeheap_llvm_stats* before) {
  codeheap_llvm_stats now = stats_of(heap);
  return memcmp(&now, before, sizeof now) == 0;
}

/* After an engine is gone: its blocks are quarantined; a reclaim call frees them and
 * deregisters their unwind info. */
static void check_teardown(codeheap_llvm_heap* heap, uint64_t code) {
  codeheap_llvm_stats retired = stats_of(heap);
  CHECK(retired.live_blocks == 0 && retired.used_bytes == 0);
  CHECK(retired.quarantined_blocks > 0 && retired.quarantined_bytes > 0);
  CHECK(has_unwind_info(code)); /* a thread could still be unwinding through it */
  codeheap_llvm_reclaim_report report;
  CHECK(codeheap_llvm_reclaim(heap, NULL, NULL, &report) == 0);
  CHECK(report.reclaimed_blocks == retired.quarantined_blocks);
  codeheap_llvm_stats reclaimed = stats_of(heap);
  CHECK(reclaimed.quarantined_blocks == 0 && reclaimed.quarantined_bytes == 0);
  CHECK(reclaimed.free_bytes == reclaimed.reserved_bytes);
  CHECK(reclaimed.blocks_reclaimed == retired.blocks_reclaimed + retired.quarantined_blocks);
  CHECK(!has_unwind_info(code));
}

static void test_mcjit(codeheap_llvm_heap* heap) {
  LLVMContextRef context = LLVMContextCreate();
  LLVMModuleRef module = parse(context, "mcjit-module");
  CHECK(module != NULL);
  if (module == NULL) return;
  struct LLVMMCJITCompilerOptions options;
  LLVMInitializeMCJITCompilerOptions(&options, sizeof options);
  options.OptLevel = 2;
  options.CodeModel = LLVMCodeModelSmall;
  options.MCJMM = codeheap_llvm_mcjit_memory_manager(heap, "mcjit-module");
  CHECK(options.MCJMM != NULL);
  LLVMMCJITMemoryManagerRef manager = options.MCJMM;
  LLVMExecutionEngineRef engine = NULL;
  char* message = NULL;
  if (LLVMCreateMCJITCompilerForModule(&engine, module, &options, sizeof options, &message)) {
    printf("FAILED: MCJIT: %s\n", message);
    ++failed;
    LLVMDisposeMessage(message);
    LLVMContextDispose(context);
    return;
  }
  uint64_t classify = LLVMGetFunctionAddress(engine, "classify");
  uint64_t fib = LLVMGetFunctionAddress(engine, "fib");
  CHECK(codeheap_llvm_mcjit_status(manager) == 0);
  check_functions(classify, fib);
  codeheap_llvm_stats live = stats_of(heap);
  CHECK(live.live_blocks > 0 && live.quarantined_blocks == 0);
  char* svg = codeheap_llvm_map_svg(heap);
  CHECK(svg != NULL && strstr(svg, "<svg") != NULL && strstr(svg, "mcjit-module") != NULL);
  codeheap_llvm_free_string(svg);

  LLVMDisposeExecutionEngine(engine); /* and the module, and the memory manager */
  CHECK_REFUSED(codeheap_llvm_mcjit_status(manager) != 0, "codeheap_llvm_mcjit_status");
  check_teardown(heap, classify);
  LLVMContextDispose(context);
}

/* The object layer of test_lljit through LLVM-C's own creator hook. */
static LLVMOrcObjectLayerRef create_layer(void* heap, LLVMOrcExecutionSessionRef session,
                                          const char* triple) {
  (void)triple;
  return codeheap_llvm_object_layer((codeheap_llvm_heap*)heap, session);
}

static void test_lljit(codeheap_llvm_heap* heap, int through_creator) {
  /* The Small code model (LLJIT's default for JIT code is Large). */
  char* triple = LLVMGetDefaultTargetTriple();
  char* cpu = LLVMGetHostCPUName();
  char* features = LLVMGetHostCPUFeatures();
  LLVMTargetRef target = NULL;
  char* message = NULL;
  CHECK(LLVMGetTargetFromTriple(triple, &target, &message) == 0);
  LLVMTargetMachineRef machine = LLVMCreateTargetMachine(
      target, triple, cpu, features, LLVMCodeGenLevelDefault, LLVMRelocDefault, LLVMCodeModelSmall);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);

  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
      builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(machine));
  if (through_creator) {
    LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator(builder, create_layer, heap);
  } else {
    CHECK(codeheap_llvm_lljit_builder_set_heap(builder, heap) == 0);
    CHECK_REFUSED(codeheap_llvm_heap_destroy(heap) != 0, "still used");
  }
  LLVMOrcLLJITRef jit = NULL;
  LLVMErrorRef error = LLVMOrcCreateLLJIT(&jit, builder); /* disposes of the builder */
  if (error != NULL) {
    message = LLVMGetErrorMessage(error);
    printf("FAILED: LLJIT: %s\n", message);
    ++failed;
    LLVMDisposeErrorMessage(message);
    return;
  }

  LLVMOrcThreadSafeContextRef context = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef module =
      parse(LLVMOrcThreadSafeContextGetContext(context), through_creator ? "orc-c" : "orc");
  CHECK(module != NULL);
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(module, context);
  LLVMOrcDisposeThreadSafeContext(context); /* the module keeps it */
  error = LLVMOrcLLJITAddLLVMIRModule(jit, LLVMOrcLLJITGetMainJITDylib(jit), tsm);
  CHECK(error == NULL);
  LLVMOrcExecutorAddress classify = 0, fib = 0;
  error = LLVMOrcLLJITLookup(jit, &classify, "classify");
  if (error != NULL) {
    message = LLVMGetErrorMessage(error);
    printf("lookup: %s\n", message);
    LLVMDisposeErrorMessage(message);
  }
  CHECK(error == NULL);
  CHECK(LLVMOrcLLJITLookup(jit, &fib, "fib") == NULL);
  check_functions(classify, fib);
  CHECK(stats_of(heap).live_blocks > 0);

  CHECK(LLVMOrcDisposeLLJIT(jit) == NULL);
  check_teardown(heap, classify);
}

/* Every entry point refuses bad input with a message and leaves the heap as it was. */
static void test_bad_input(codeheap_llvm_heap* heap) {
  codeheap_llvm_stats before = stats_of(heap);
  codeheap_llvm_reclaim_report report;

  codeheap_llvm_options_init(NULL);
  CHECK(strstr(codeheap_llvm_last_error(), "codeheap_llvm_options_init") != NULL);
  codeheap_llvm_options options;
  codeheap_llvm_options_init(&options);
  options.code_bytes = (size_t)8 << 30; /* cannot fit below 2 GiB */
  CHECK_REFUSED(codeheap_llvm_heap_create(&options) == NULL, "codeheap_llvm_heap_create");
  CHECK_REFUSED(codeheap_llvm_heap_destroy(NULL) != 0, "heap is NULL");
  CHECK_REFUSED(codeheap_llvm_heap_stats(NULL, &before) != 0, "codeheap_llvm_heap_stats");
  CHECK_REFUSED(codeheap_llvm_heap_stats(heap, NULL) != 0, "stats is NULL");
  CHECK_REFUSED(codeheap_llvm_stats_text(NULL) == NULL, "codeheap_llvm_stats_text");
  CHECK_REFUSED(codeheap_llvm_stats_json(NULL) == NULL, "codeheap_llvm_stats_json");
  CHECK_REFUSED(codeheap_llvm_map_svg(NULL) == NULL, "codeheap_llvm_map_svg");
  CHECK_REFUSED(codeheap_llvm_write_map(NULL, "map.svg") != 0, "codeheap_llvm_write_map");
  CHECK_REFUSED(codeheap_llvm_write_map(heap, NULL) != 0, "path is NULL");
  CHECK_REFUSED(codeheap_llvm_write_map(heap, "/nonexistent-dir/map.svg") != 0,
                "/nonexistent-dir/map.svg");
  CHECK_REFUSED(codeheap_llvm_reclaim(NULL, NULL, NULL, &report) != 0, "codeheap_llvm_reclaim");
  CHECK_REFUSED(codeheap_llvm_mcjit_memory_manager(NULL, "x") == NULL,
                "codeheap_llvm_mcjit_memory_manager");
  CHECK_REFUSED(codeheap_llvm_mcjit_status(NULL) != 0, "manager is NULL");
  CHECK_REFUSED(codeheap_llvm_object_layer(heap, NULL) == NULL, "session is NULL");
  CHECK_REFUSED(codeheap_llvm_object_layer(NULL, NULL) == NULL, "codeheap_llvm_object_layer");
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  CHECK_REFUSED(codeheap_llvm_lljit_builder_set_heap(builder, NULL) != 0, "heap is NULL");
  CHECK_REFUSED(codeheap_llvm_lljit_builder_set_heap(NULL, heap) != 0, "builder is NULL");
  LLVMOrcDisposeLLJITBuilder(builder);

  /* A manager that never reached an engine holds the heap until it is disposed of. */
  LLVMMCJITMemoryManagerRef unused = codeheap_llvm_mcjit_memory_manager(heap, "unused");
  CHECK(unused != NULL && codeheap_llvm_mcjit_status(unused) == 0);
  CHECK_REFUSED(codeheap_llvm_heap_destroy(heap) != 0, "still used by 1");
  LLVMDisposeMCJITMemoryManager(unused);

  /* A destroyed heap is recognized, not dereferenced. */
  codeheap_llvm_options_init(&options);
  options.code_bytes = 1 << 20;
  options.read_only_bytes = 1 << 20;
  options.data_bytes = 1 << 20;
  options.name = "short-lived";
  codeheap_llvm_heap* gone = codeheap_llvm_heap_create(&options);
  CHECK(gone != NULL);
  CHECK(codeheap_llvm_heap_destroy(gone) == 0);
  CHECK_REFUSED(codeheap_llvm_heap_destroy(gone) != 0, "not a live heap");
  CHECK_REFUSED(codeheap_llvm_stats_json(gone) == NULL, "not a live heap");

  CHECK(same_stats(heap, &before));
}

int main(void) {
  LLVMLinkInMCJIT();
  CHECK(LLVMInitializeNativeTarget() == 0);
  CHECK(LLVMInitializeNativeAsmPrinter() == 0);
  CHECK(LLVMInitializeNativeAsmParser() == 0);

  codeheap_llvm_options options;
  codeheap_llvm_options_init(&options);
  options.code_bytes = 16u << 20;
  options.read_only_bytes = 4u << 20;
  options.data_bytes = 4u << 20;
  options.name = "llvm-c test";
  codeheap_llvm_heap* heap = codeheap_llvm_heap_create(&options);
  CHECK(heap != NULL);
  if (heap == NULL) return 1;

  test_mcjit(heap);
  test_lljit(heap, 0);
  test_lljit(heap, 1);
  test_bad_input(heap);

  char* text = codeheap_llvm_stats_text(heap);
  CHECK(text != NULL && strstr(text, "heap-stats \"llvm-c test\"") != NULL);
  codeheap_llvm_free_string(text);
  char* json = codeheap_llvm_stats_json(heap);
  CHECK(json != NULL && strstr(json, "\"blocks_reclaimed\"") != NULL);
  codeheap_llvm_free_string(json);
  const char* dir = getenv("TEST_TMPDIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/llvm_c_map.svg", dir != NULL ? dir : "/tmp");
  CHECK(codeheap_llvm_write_map(heap, path) == 0);

  CHECK(codeheap_llvm_heap_destroy(heap) == 0);
  printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
