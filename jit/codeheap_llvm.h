/* codeheap from LLVM-C: the low-address code heap and its LLVM memory managers, for programs
 * that drive LLVM through its C API (MCJIT or ORC's LLJIT). No Boehm GC, no garbage-collected
 * runtime: the program decides when code is dead (by disposing of its engine) and when nothing
 * executes it any more (a reclaim call). See docs/embedding.md, "From LLVM-C".
 *
 *   codeheap_llvm_heap* heap = codeheap_llvm_heap_create(NULL);
 *   options.CodeModel = LLVMCodeModelSmall;
 *   options.MCJMM = codeheap_llvm_mcjit_memory_manager(heap, "my-module");
 *   LLVMCreateMCJITCompilerForModule(&engine, module, &options, sizeof options, &message);
 *   ...                                  call the code: every section lies below 2 GiB
 *   LLVMDisposeExecutionEngine(engine);  its blocks go to the heap's quarantine
 *   codeheap_llvm_reclaim(heap, NULL, NULL, NULL);   nothing runs them: to the free list
 *   codeheap_llvm_heap_destroy(heap);
 *
 * Errors: a call that fails returns NULL (pointers) or non-zero (int) and leaves a message for
 * the calling thread in codeheap_llvm_last_error(). A failed call, bad input included (a NULL or
 * destroyed handle, a path that cannot be written), changes nothing in the heap. Nothing aborts
 * the process.
 *
 * Threads: every call may be made from any thread, but not concurrently with
 * codeheap_llvm_heap_destroy of the same heap. LLVM's own rules for engines apply as usual.
 */
#ifndef CODEHEAP_JIT_CODEHEAP_LLVM_H_
#define CODEHEAP_JIT_CODEHEAP_LLVM_H_

#include <llvm-c/ExecutionEngine.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct codeheap_llvm_heap codeheap_llvm_heap;

typedef struct codeheap_llvm_options {
  size_t code_bytes;        /* executable arena */
  size_t read_only_bytes;   /* constants, jump tables, .eh_frame */
  size_t data_bytes;        /* writable data */
  uintptr_t placement_hint; /* 0: a random low address; else exactly here (below 2 GiB) */
  size_t retain_free_bytes; /* free pages kept committed after reclaim (0: return them all) */
  const char* name;         /* for logs, dumps and the map; copied */
} codeheap_llvm_options;

/* Whole-heap numbers (the dump's headline; codeheap_llvm_stats_json has everything). */
typedef struct codeheap_llvm_stats {
  size_t reserved_bytes;
  size_t committed_bytes;
  size_t used_bytes;        /* live blocks */
  size_t quarantined_bytes; /* retired, waiting for a reclaim call */
  size_t free_bytes;
  size_t largest_free_block;
  size_t live_blocks;
  size_t quarantined_blocks;
  size_t free_blocks;
  uint64_t reclaim_passes;
  uint64_t blocks_reclaimed;
} codeheap_llvm_stats;

typedef struct codeheap_llvm_reclaim_report {
  size_t examined_blocks;
  size_t reclaimed_blocks;
  size_t reclaimed_bytes;
  size_t still_referenced_blocks;
} codeheap_llvm_reclaim_report;

/* Non-zero if something (a thread's program counter or a return address on some stack) may
 * still point into the quarantined block [begin, end); such a block stays in quarantine. A
 * word equal to `end` counts as inside (a `noreturn` call that ends the code pushes it).
 * Called without any heap lock held, so it may stop threads and scan stacks. */
typedef int (*codeheap_llvm_is_referenced)(void* context, uintptr_t begin, uintptr_t end);

/* The message of the calling thread's last failed call ("" if none). Valid until the next
 * codeheap_llvm call on this thread. */
const char* codeheap_llvm_last_error(void);

/* Fills `options` with the defaults: 256 MiB code, 64 MiB read-only, 192 MiB data, a random
 * placement, 4 MiB retained, name "codeheap". */
void codeheap_llvm_options_init(codeheap_llvm_options* options);

/* Reserves a heap in the low 2 GiB; `options` NULL means the defaults. NULL on failure (bad
 * options, no room below 2 GiB). */
codeheap_llvm_heap* codeheap_llvm_heap_create(const codeheap_llvm_options* options);
/* Unmaps the heap. Fails (non-zero, nothing done) while a memory manager or object layer made
 * from it is alive (dispose of its engine first) or an LLJIT builder still holds it; code
 * still in quarantine is simply dropped with the heap. */
int codeheap_llvm_heap_destroy(codeheap_llvm_heap* heap);

/* The numbers, the heap-stats dump (text, JSON: docs/heap-stats.md) and the heap map (SVG).
 * Strings are freed with codeheap_llvm_free_string. */
int codeheap_llvm_heap_stats(codeheap_llvm_heap* heap, codeheap_llvm_stats* stats);
char* codeheap_llvm_stats_text(codeheap_llvm_heap* heap);
char* codeheap_llvm_stats_json(codeheap_llvm_heap* heap);
char* codeheap_llvm_map_svg(codeheap_llvm_heap* heap);
/* Writes the heap map to `path` (created or truncated). */
int codeheap_llvm_write_map(codeheap_llvm_heap* heap, const char* path);
void codeheap_llvm_free_string(char* string);

/* Moves quarantined blocks that `is_referenced` does not claim to the free list (`is_referenced`
 * NULL: the caller knows nothing executes retired code any more). Then returns free pages
 * beyond retain_free_bytes to the OS. `report` may be NULL. */
int codeheap_llvm_reclaim(codeheap_llvm_heap* heap, codeheap_llvm_is_referenced is_referenced,
                          void* context, codeheap_llvm_reclaim_report* report);

/* --- MCJIT ---
 * A memory manager on the heap for one MCJIT engine: pass it as LLVMMCJITCompilerOptions.MCJMM
 * to LLVMCreateMCJITCompilerForModule, which takes ownership of it (even if that call fails).
 * One manager per engine. Code, read-only data (jump tables, .eh_frame) and data go to the
 * heap's arenas, so LLVMCodeModelSmall works. Every object gets a heap owner named `name`
 * (NULL: "mcjit"). Its .eh_frame is registered with the unwinder. Disposing of the engine
 * retires the blocks to quarantine with their bytes intact; the frames are deregistered when a
 * reclaim call frees them. A manager never given to an engine is freed with
 * LLVMDisposeMCJITMemoryManager. NULL on failure. */
LLVMMCJITMemoryManagerRef codeheap_llvm_mcjit_memory_manager(codeheap_llvm_heap* heap,
                                                             const char* name);
/* MCJIT ignores a memory manager's failure to finalize (e.g. a full heap: the section went to
 * scratch memory instead). Call this after LLVMGetFunctionAddress / LLVMFinalizeEngine: 0 if
 * every section so far was placed in the heap; non-zero, with the heap's reason, if not (then
 * do not run that object's code). Also non-zero for a handle that is not a live manager of
 * this API. */
int codeheap_llvm_mcjit_status(LLVMMCJITMemoryManagerRef manager);

/* --- ORC ---
 * An ObjectLinkingLayer (JITLink) on the heap for `session`, with .eh_frame registration (which
 * LLJIT does not add to a layer it did not make itself): deregistration waits until a reclaim
 * call frees the code, so a thread still inside removed code can unwind. The caller (or the
 * LLJIT it is returned to by a creator) owns the layer. NULL on failure. */
LLVMOrcObjectLayerRef codeheap_llvm_object_layer(codeheap_llvm_heap* heap,
                                                 LLVMOrcExecutionSessionRef session);
/* Makes the LLJIT that `builder` creates link into the heap: the same as
 * LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator with a creator returning
 * codeheap_llvm_object_layer(heap, session), but checked now, since a creator cannot report an
 * error to LLJIT. The builder holds the heap (codeheap_llvm_heap_destroy refuses) until it is
 * disposed of, which LLVMOrcCreateLLJIT does. */
int codeheap_llvm_lljit_builder_set_heap(LLVMOrcLLJITBuilderRef builder, codeheap_llvm_heap* heap);

#ifdef __cplusplus
}
#endif

#endif /* CODEHEAP_JIT_CODEHEAP_LLVM_H_ */
