// Private to //jit:engine: what its files share. engine.cc: creation, the public members and
// entry cells; engine_compiler.cc: target machines and compilation; engine_modules.cc: adding,
// linking and removing modules; engine_link_plugins.cc: the engine's own link passes.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <spdlog/logger.h>

#include "jit/engine.h"
#include "jit/entry_cell.h"
#include "jit/link_plugin.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ExecutionEngine/Orc/Core.h"
#include "llvm/ExecutionEngine/Orc/IRCompileLayer.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Target/TargetMachine.h"

namespace codeheap::jit {

namespace engine_internal {

inline llvm::Error jit_error(const llvm::Twine& message) {
  return llvm::make_error<llvm::StringError>(message, llvm::inconvertibleErrorCode());
}

// ORC reports why a materialization failed (an undefined symbol, a full heap) out of band,
// through the session's error reporter, and fails the lookup that triggered it only with a
// generic "Failed to materialize symbols". LLJIT without compile threads links on the thread
// that looks up, so while a thread links a module, errors reported on that thread belong to the
// module; this collects them for the caller.
class ReportedErrors {
 public:
  ReportedErrors() : previous_(current_) { current_ = this; }
  ~ReportedErrors() {
    current_ = previous_;
    llvm::consumeError(std::move(errors_));
  }
  ReportedErrors(const ReportedErrors&) = delete;
  ReportedErrors& operator=(const ReportedErrors&) = delete;

  llvm::Error take() { return std::move(errors_); }

  // False if no link is collecting on this thread.
  static bool deliver(llvm::Error& err) {
    if (current_ == nullptr) return false;
    current_->errors_ = llvm::joinErrors(std::move(current_->errors_), std::move(err));
    return true;
  }

 private:
  static thread_local ReportedErrors* current_;
  ReportedErrors* previous_;
  llvm::Error errors_ = llvm::Error::success();
};

// Object code that link_module keeps for a second link (CompiledModule), by a token. The module
// carries its token as named metadata from link_module to the compiler, which may run on another
// thread (the one whose lookup materializes the module first); the compiler removes it before
// generating code and puts a copy of the object here.
class ObjectKeeper {
 public:
  uint64_t expect();
  void put(uint64_t token, std::unique_ptr<llvm::MemoryBuffer> object);
  std::unique_ptr<llvm::MemoryBuffer> take(uint64_t token);

  static void tag(llvm::Module& module, uint64_t token);
  // The module's token (0: none), removed from the module.
  static uint64_t untag(llvm::Module& module);

 private:
  std::mutex mutex_;
  std::unordered_map<uint64_t, std::unique_ptr<llvm::MemoryBuffer>> objects_;
  uint64_t next_ = 1;
};

// Compiles on the calling thread with a TargetMachine taken from a pool. A TargetMachine is not
// thread-safe, and building one per compilation (ConcurrentIRCompiler) costs about a fifth of
// compiling a small closure; the pool holds at most one per thread that ever compiled at once.
class PooledIRCompiler : public llvm::orc::IRCompileLayer::IRCompiler {
 public:
  PooledIRCompiler(llvm::orc::JITTargetMachineBuilder builder, ObjectKeeper& keeper);

  llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> operator()(llvm::Module& module) override;

 private:
  llvm::orc::JITTargetMachineBuilder builder_;
  ObjectKeeper& keeper_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<llvm::TargetMachine>> idle_;
};

// Textual IR into a module of its own context; errors name the module, line and column.
llvm::Expected<llvm::orc::ThreadSafeModule> parse_module(llvm::StringRef ir_text,
                                                         llvm::StringRef name);

// What the engine knows of each module's link while it runs, by the module's resource tracker
// (entries are made before the module can be materialized, so they reach whichever thread links
// it: another module's lookup may). The graph goes under the module's heap owner
// (HeapJITLinkMemoryManager::place_under), so the owner the engine chose names the blocks; and,
// for link_module, LinkedModule::heap_bytes is summed in a pass after allocation, when every
// block of the graph (GOT and stubs included) has its address. Graphs of modules without an
// entry get neither.
class ModuleLinks final : public StatelessLinkPlugin {
 public:
  explicit ModuleLinks(HeapJITLinkMemoryManager& memory) : memory_(memory) {}

  void expect(llvm::orc::ResourceKey key, OwnerId owner, bool count_bytes);
  // The heap bytes counted; the entry goes. Once the link has ended, either way.
  uint64_t take(llvm::orc::ResourceKey key);

  void modifyPassConfig(llvm::orc::MaterializationResponsibility& responsibility,
                        llvm::jitlink::LinkGraph& graph,
                        llvm::jitlink::PassConfiguration& config) override;
  // A link that failed before allocating leaves no placement behind.
  llvm::Error notifyFailed(llvm::orc::MaterializationResponsibility& responsibility) override;

 private:
  struct Link {
    OwnerId owner = kNoOwner;
    bool count_bytes = false;
    uint64_t bytes = 0;
    const llvm::jitlink::LinkGraph* placed = nullptr;  // until the memory manager allocates it
  };

  HeapJITLinkMemoryManager& memory_;
  std::mutex mutex_;
  llvm::DenseMap<llvm::orc::ResourceKey, Link> links_;
};

// Names every function of each linked graph in the heap (Heap::add_symbols) once its addresses
// are assigned, so that Heap::describe (a crash report) can say which JIT function a pc is in
// without a lock.
std::unique_ptr<llvm::orc::ObjectLinkingLayer::Plugin> make_function_namer(Heap& heap);

}  // namespace engine_internal

struct CompiledModule::State {
  std::string name;
  OwnerId owner = kNoOwner;  // the caller's, for the second link; kNoOwner: the engine chooses
  std::unique_ptr<llvm::MemoryBuffer> object;
  llvm::orc::SymbolLookupSet definitions;
  llvm::DenseMap<llvm::orc::SymbolStringPtr, std::string> ir_names;
};

struct Engine::Impl {
  struct LiveModule {
    llvm::orc::ResourceTrackerSP tracker;
    std::string name;
    std::vector<llvm::orc::SymbolStringPtr> definitions;  // keys of `linked`
  };
  struct Cell {
    std::unique_ptr<EntryCell> cell;
    ModuleHandle body;  // the module holding the version the cell points at
  };

  Impl(Heap& heap, EngineOptions options);
  // Removes every live module before `jit` ends its session (see engine_modules.cc).
  ~Impl();

  llvm::Expected<std::unique_ptr<llvm::orc::ObjectLayer>> create_linking_layer(
      llvm::orc::ExecutionSession& session);

  llvm::orc::JITDylib& main() { return jit->getMainJITDylib(); }

  // Adds and links `module` under `owner` (kNoOwner: a new one); fills `report` (handle,
  // definitions, heap bytes) if given, and `keep` (see Engine::link_module) if given and the heap
  // is full.
  llvm::Expected<ModuleHandle> add(llvm::orc::ThreadSafeModule module, llvm::StringRef name,
                                   LinkedModule* report = nullptr, CompiledModule* keep = nullptr,
                                   OwnerId owner = kNoOwner);

  // Links what `add_to` adds to a new resource tracker (a module, or a kept module's object):
  // looks up `definitions` and reports them under their IR names. `token` names the object that
  // `keep` receives when the heap is full (0: none).
  using IRNames = llvm::DenseMap<llvm::orc::SymbolStringPtr, std::string>;
  using AddTo = llvm::function_ref<llvm::Error(const llvm::orc::ResourceTrackerSP&)>;
  llvm::Expected<ModuleHandle> link(llvm::StringRef name, OwnerId owner,
                                    llvm::orc::SymbolLookupSet definitions, IRNames ir_names,
                                    LinkedModule* report, CompiledModule* keep, uint64_t token,
                                    AddTo add_to);

  llvm::Error remove(ModuleHandle handle);
  // Ends a module taken out of `modules`: its tracker removed (the memory manager retires the
  // owner with the blocks), or, for a module that defines nothing and was never linked, its
  // owner retired here.
  llvm::Error end(OwnerId owner, LiveModule& module);

  // The address of every definition of a live module, as its eager link resolved it, so
  // looking up a module's function (what a runtime does after each compilation) costs a hash
  // lookup instead of a session lookup. Entry cells and host symbols are not in it.
  llvm::Expected<llvm::orc::ExecutorAddr> lookup(llvm::StringRef name);

  Heap& heap;
  EngineOptions options;
  std::shared_ptr<spdlog::logger> log;
  engine_internal::ObjectKeeper objects;  // used by `jit`'s compiler
  HeapJITLinkMemoryManager memory;        // outlives `jit`, whose allocations it holds
  std::shared_ptr<engine_internal::ModuleLinks> links;  // a linking layer plugin
  std::unique_ptr<llvm::orc::LLJIT> jit;

  mutable std::mutex modules_mutex;
  std::unordered_map<OwnerId, LiveModule> modules;  // by the heap owner of their blocks
  llvm::DenseMap<llvm::orc::SymbolStringPtr, llvm::orc::ExecutorAddr> linked;
  size_t removals_since_sweep = 0;

  std::mutex cells_mutex;  // serializes define_function
  llvm::StringMap<Cell> cells;
  uint64_t next_version = 1;
};

}  // namespace codeheap::jit
