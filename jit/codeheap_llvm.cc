// The LLVM-C API of the code heap (jit/codeheap_llvm.h): handles, errors as thread-local
// messages, and the memory managers behind LLVM-C's opaque references.
//
// LLVM-C's references are the C++ objects themselves, reinterpret_cast (LLVM's own bindings
// convert them with DEFINE_SIMPLE_CONVERSION_FUNCTIONS; ORC's are private to LLVM, so the ones
// needed here are defined the same way below). An object handed to LLVM as an ObjectLayer or an
// RTDyldMemoryManager must be cast to that exact base first: our classes derive from HeapUse
// too, so the base is not at offset 0.
//
// Lifetimes: a handle registry answers "is this a live handle?" so that a NULL, stale or foreign
// handle gets a message instead of a crash, and every object that uses a heap holds a HeapUse,
// so a heap cannot be destroyed under a live engine.
#include "jit/codeheap_llvm.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "codeheap/heap.h"
#include "codeheap/log.h"
#include "jit/eh_frame_plugin.h"
#include "jit/jitlink_memory_manager.h"
#include "jit/rtdyld_memory_manager.h"
#include "llvm/ExecutionEngine/Orc/Core.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
#include "llvm/Support/CBindingWrapping.h"

struct codeheap_llvm_heap {
  std::unique_ptr<codeheap::Heap> heap;
  // Shared by every object layer on this heap: it keeps no state but the heap, and must outlive
  // every allocation it made, which the heap's lifetime guarantees.
  std::unique_ptr<codeheap::jit::HeapJITLinkMemoryManager> jitlink;
  std::atomic<size_t> users{0};  // HeapUse objects
};

namespace {

// (RTDyldMemoryManager's, for LLVMMCJITMemoryManagerRef, are public: llvm::wrap/unwrap.)
DEFINE_SIMPLE_CONVERSION_FUNCTIONS(llvm::orc::ExecutionSession, LLVMOrcExecutionSessionRef)
DEFINE_SIMPLE_CONVERSION_FUNCTIONS(llvm::orc::ObjectLayer, LLVMOrcObjectLayerRef)
DEFINE_SIMPLE_CONVERSION_FUNCTIONS(llvm::orc::LLJITBuilder, LLVMOrcLLJITBuilderRef)

thread_local std::string t_last_error;

const std::shared_ptr<spdlog::logger>& log() {
  static const std::shared_ptr<spdlog::logger> logger = codeheap::logger("llvm_c");
  return logger;
}

template <typename T>
T fail(std::string message, T value) {
  log()->debug("{}", message);
  t_last_error = std::move(message);
  return value;
}

// Runs an entry point's body: clears the last error and turns an exception (out of memory, a
// dump of a name that is not UTF-8) into a failure, since none may cross into C.
template <typename T, typename F>
T guarded(const char* who, T failure, F&& body) {
  t_last_error.clear();
  try {
    return body();
  } catch (const std::exception& e) {
    return fail(fmt::format("{}: {}", who, e.what()), failure);
  }
}

char* copy_string(const char* who, const std::string& text) {
  char* copy = static_cast<char*>(std::malloc(text.size() + 1));
  if (copy == nullptr) return fail(fmt::format("{}: out of memory", who), copy);
  std::memcpy(copy, text.c_str(), text.size() + 1);
  return copy;
}

class McjitManager;

// The live handles. Creating a user of a heap and destroying the heap both hold the mutex, so
// destroy's check of the users is never stale.
struct Registry {
  std::mutex mutex;
  std::unordered_set<const codeheap_llvm_heap*> heaps;
  std::unordered_map<const llvm::RTDyldMemoryManager*, McjitManager*> managers;
};

// Never destroyed: engines may be disposed of during static destruction.
Registry& registry() {
  static auto* instance = new Registry;
  return *instance;
}

// `heap` if it is live; else nullptr and the message. Under registry().mutex.
codeheap_llvm_heap* live_locked(const char* who, codeheap_llvm_heap* heap) {
  if (heap == nullptr) return fail(fmt::format("{}: heap is NULL", who), heap);
  if (!registry().heaps.contains(heap)) {
    return fail(fmt::format("{}: {} is not a live heap (destroyed already?)", who,
                            static_cast<const void*>(heap)),
                static_cast<codeheap_llvm_heap*>(nullptr));
  }
  return heap;
}

codeheap_llvm_heap* live(const char* who, codeheap_llvm_heap* heap) {
  std::lock_guard lock(registry().mutex);
  return live_locked(who, heap);
}

// Keeps a heap from being destroyed. The first base of the classes below, so it is released
// only after they (and their other bases) are done with the heap.
class HeapUse {
 public:
  explicit HeapUse(codeheap_llvm_heap& heap) : heap_(heap) { ++heap_.users; }
  ~HeapUse() { --heap_.users; }
  HeapUse(const HeapUse&) = delete;
  HeapUse& operator=(const HeapUse&) = delete;

  codeheap_llvm_heap& handle() const { return heap_; }

 private:
  codeheap_llvm_heap& heap_;
};

class McjitManager final : private HeapUse, public codeheap::jit::RtdyldMemoryManager {
 public:
  McjitManager(codeheap_llvm_heap& heap, std::string name)
      : HeapUse(heap), RtdyldMemoryManager(*heap.heap, std::move(name)) {}
  ~McjitManager() override {
    std::lock_guard lock(registry().mutex);
    registry().managers.erase(this);
  }
};

class HeapObjectLayer final : private HeapUse, public llvm::orc::ObjectLinkingLayer {
 public:
  HeapObjectLayer(codeheap_llvm_heap& heap, llvm::orc::ExecutionSession& session)
      : HeapUse(heap), ObjectLinkingLayer(session, *heap.jitlink) {
    // LLJIT registers eh_frames only on a layer it makes itself.
    addPlugin(std::make_unique<codeheap::jit::DeferredEHFramePlugin>());
  }
};

}  // namespace

extern "C" {

const char* codeheap_llvm_last_error(void) { return t_last_error.c_str(); }

void codeheap_llvm_options_init(codeheap_llvm_options* options) {
  guarded("codeheap_llvm_options_init", 0, [&] {
    if (options == nullptr) return fail("codeheap_llvm_options_init: options is NULL", 0);
    static const codeheap::HeapOptions defaults;
    *options = codeheap_llvm_options{defaults.code_bytes,        defaults.read_only_bytes,
                                     defaults.data_bytes,        defaults.placement_hint,
                                     defaults.retain_free_bytes, "codeheap"};
    return 0;
  });
}

codeheap_llvm_heap* codeheap_llvm_heap_create(const codeheap_llvm_options* options) {
  return guarded("codeheap_llvm_heap_create", static_cast<codeheap_llvm_heap*>(nullptr), [&] {
    codeheap::HeapOptions heap_options;
    if (options != nullptr) {
      heap_options.code_bytes = options->code_bytes;
      heap_options.read_only_bytes = options->read_only_bytes;
      heap_options.data_bytes = options->data_bytes;
      heap_options.placement_hint = options->placement_hint;
      heap_options.retain_free_bytes = options->retain_free_bytes;
      if (options->name != nullptr) heap_options.name = options->name;
    }
    auto heap = codeheap::Heap::create(std::move(heap_options));
    if (!heap) {
      return fail("codeheap_llvm_heap_create: " + heap.error().message,
                  static_cast<codeheap_llvm_heap*>(nullptr));
    }
    auto handle = std::make_unique<codeheap_llvm_heap>();
    handle->jitlink = std::make_unique<codeheap::jit::HeapJITLinkMemoryManager>(**heap);
    handle->heap = std::move(*heap);
    std::lock_guard lock(registry().mutex);
    registry().heaps.insert(handle.get());
    return handle.release();
  });
}

int codeheap_llvm_heap_destroy(codeheap_llvm_heap* heap) {
  return guarded("codeheap_llvm_heap_destroy", 1, [&] {
    std::unique_ptr<codeheap_llvm_heap> doomed;
    {
      std::lock_guard lock(registry().mutex);
      if (live_locked("codeheap_llvm_heap_destroy", heap) == nullptr) return 1;
      if (const size_t users = heap->users.load(); users > 0) {
        return fail(fmt::format("codeheap_llvm_heap_destroy: heap '{}' is still used by {} "
                                "memory manager(s), object layer(s) or LLJIT builder(s); "
                                "dispose of their engines first",
                                heap->heap->options().name, users),
                    1);
      }
      registry().heaps.erase(heap);
      doomed.reset(heap);
    }
    // Unlocked: the heap runs deferred callbacks (eh_frame deregistration) as it goes.
    doomed.reset();
    return 0;
  });
}

int codeheap_llvm_heap_stats(codeheap_llvm_heap* heap, codeheap_llvm_stats* stats) {
  return guarded("codeheap_llvm_heap_stats", 1, [&] {
    if (live("codeheap_llvm_heap_stats", heap) == nullptr) return 1;
    if (stats == nullptr) return fail("codeheap_llvm_heap_stats: stats is NULL", 1);
    const codeheap::HeapStats s = heap->heap->stats();
    *stats = codeheap_llvm_stats{s.reserved_bytes,
                                 s.committed_bytes,
                                 s.used_bytes,
                                 s.quarantined_bytes,
                                 s.free_bytes,
                                 s.largest_free_block,
                                 0,
                                 0,
                                 0,
                                 s.counters.reclaim_passes.count,
                                 s.counters.reclaimed.count};
    for (const codeheap::ArenaStats& a : s.arenas) {
      stats->live_blocks += a.live_blocks;
      stats->quarantined_blocks += a.quarantined_blocks;
      stats->free_blocks += a.free_blocks;
    }
    return 0;
  });
}

char* codeheap_llvm_stats_text(codeheap_llvm_heap* heap) {
  return guarded("codeheap_llvm_stats_text", static_cast<char*>(nullptr), [&]() -> char* {
    if (live("codeheap_llvm_stats_text", heap) == nullptr) return nullptr;
    return copy_string("codeheap_llvm_stats_text", heap->heap->dump_text());
  });
}

char* codeheap_llvm_stats_json(codeheap_llvm_heap* heap) {
  return guarded("codeheap_llvm_stats_json", static_cast<char*>(nullptr), [&]() -> char* {
    if (live("codeheap_llvm_stats_json", heap) == nullptr) return nullptr;
    return copy_string("codeheap_llvm_stats_json", heap->heap->dump_json());
  });
}

char* codeheap_llvm_map_svg(codeheap_llvm_heap* heap) {
  return guarded("codeheap_llvm_map_svg", static_cast<char*>(nullptr), [&]() -> char* {
    if (live("codeheap_llvm_map_svg", heap) == nullptr) return nullptr;
    return copy_string("codeheap_llvm_map_svg", heap->heap->dump_svg());
  });
}

int codeheap_llvm_write_map(codeheap_llvm_heap* heap, const char* path) {
  return guarded("codeheap_llvm_write_map", 1, [&] {
    if (live("codeheap_llvm_write_map", heap) == nullptr) return 1;
    if (path == nullptr) return fail("codeheap_llvm_write_map: path is NULL", 1);
    auto written = codeheap::write_text_file(path, heap->heap->dump_svg());
    if (!written) return fail("codeheap_llvm_write_map: " + written.error().message, 1);
    return 0;
  });
}

void codeheap_llvm_free_string(char* string) { std::free(string); }

int codeheap_llvm_reclaim(codeheap_llvm_heap* heap, codeheap_llvm_is_referenced is_referenced,
                          void* context, codeheap_llvm_reclaim_report* report) {
  return guarded("codeheap_llvm_reclaim", 1, [&] {
    if (live("codeheap_llvm_reclaim", heap) == nullptr) return 1;
    const codeheap::ReclaimReport r = heap->heap->reclaim([&](uintptr_t begin, uintptr_t end) {
      return is_referenced != nullptr && is_referenced(context, begin, end) != 0;
    });
    if (report != nullptr) {
      *report = codeheap_llvm_reclaim_report{r.examined_blocks, r.reclaimed_blocks,
                                             r.reclaimed_bytes, r.still_referenced_blocks};
    }
    return 0;
  });
}

LLVMMCJITMemoryManagerRef codeheap_llvm_mcjit_memory_manager(codeheap_llvm_heap* heap,
                                                             const char* name) {
  return guarded("codeheap_llvm_mcjit_memory_manager",
                 static_cast<LLVMMCJITMemoryManagerRef>(nullptr),
                 [&]() -> LLVMMCJITMemoryManagerRef {
                   std::lock_guard lock(registry().mutex);
                   if (live_locked("codeheap_llvm_mcjit_memory_manager", heap) == nullptr) {
                     return nullptr;
                   }
                   auto* manager = new McjitManager(*heap, name != nullptr ? name : "mcjit");
                   // As the base MCJIT will own and delete it through.
                   llvm::RTDyldMemoryManager* base = manager;
                   registry().managers.emplace(base, manager);
                   return llvm::wrap(base);
                 });
}

int codeheap_llvm_mcjit_status(LLVMMCJITMemoryManagerRef manager) {
  return guarded("codeheap_llvm_mcjit_status", 1, [&] {
    if (manager == nullptr) return fail("codeheap_llvm_mcjit_status: manager is NULL", 1);
    // Held while asking, so the engine cannot dispose of the manager meanwhile.
    std::lock_guard lock(registry().mutex);
    auto it = registry().managers.find(llvm::unwrap(manager));
    if (it == registry().managers.end()) {
      return fail(fmt::format("codeheap_llvm_mcjit_status: {} is not a live memory manager of "
                              "codeheap_llvm_mcjit_memory_manager (its engine disposed of it?)",
                              static_cast<const void*>(manager)),
                  1);
    }
    if (llvm::Error error = it->second->status()) {
      return fail("codeheap_llvm_mcjit_status: " + llvm::toString(std::move(error)), 1);
    }
    return 0;
  });
}

LLVMOrcObjectLayerRef codeheap_llvm_object_layer(codeheap_llvm_heap* heap,
                                                 LLVMOrcExecutionSessionRef session) {
  return guarded("codeheap_llvm_object_layer", static_cast<LLVMOrcObjectLayerRef>(nullptr),
                 [&]() -> LLVMOrcObjectLayerRef {
                   std::lock_guard lock(registry().mutex);
                   if (live_locked("codeheap_llvm_object_layer", heap) == nullptr) return nullptr;
                   if (session == nullptr) {
                     return fail("codeheap_llvm_object_layer: session is NULL",
                                 static_cast<LLVMOrcObjectLayerRef>(nullptr));
                   }
                   llvm::orc::ObjectLayer* layer = new HeapObjectLayer(*heap, *unwrap(session));
                   return wrap(layer);
                 });
}

int codeheap_llvm_lljit_builder_set_heap(LLVMOrcLLJITBuilderRef builder, codeheap_llvm_heap* heap) {
  return guarded("codeheap_llvm_lljit_builder_set_heap", 1, [&] {
    std::lock_guard lock(registry().mutex);
    if (live_locked("codeheap_llvm_lljit_builder_set_heap", heap) == nullptr) return 1;
    if (builder == nullptr) {
      return fail("codeheap_llvm_lljit_builder_set_heap: builder is NULL", 1);
    }
    // The creator holds the heap for as long as the builder (or a copy of its state) lives.
    auto use = std::make_shared<HeapUse>(*heap);
    unwrap(builder)->setObjectLinkingLayerCreator(
        [use](llvm::orc::ExecutionSession& session,
              const llvm::Triple&) -> llvm::Expected<std::unique_ptr<llvm::orc::ObjectLayer>> {
          return std::make_unique<HeapObjectLayer>(use->handle(), session);
        });
    return 0;
  });
}

}  // extern "C"
