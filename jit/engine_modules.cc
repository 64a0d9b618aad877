// The engine's modules: adding one (verify, compile, link eagerly), the registry of live modules
// with their definitions' addresses, and removal, which retires a module's blocks to the heap's
// quarantine.
#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "jit/engine.h"
#include "jit/engine_internal.h"
#include "jit/error.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/GlobalVariable.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

namespace codeheap::jit {

using engine_internal::jit_error;
using engine_internal::ObjectKeeper;
using engine_internal::ReportedErrors;
using llvm::Error;
using llvm::Expected;
using llvm::StringRef;
using llvm::orc::ExecutorAddr;
using llvm::orc::ThreadSafeModule;

thread_local ReportedErrors* engine_internal::ReportedErrors::current_ = nullptr;

namespace {

// llvm.global_ctors / llvm.global_dtors with at least one entry.
bool has_static_initializers(const llvm::Module& module) {
  for (const char* name : {"llvm.global_ctors", "llvm.global_dtors"}) {
    const llvm::GlobalVariable* list = module.getNamedGlobal(name);
    if (list != nullptr && list->hasInitializer() && !list->getInitializer()->isNullValue())
      return true;
  }
  return false;
}

// After this many removals the session's symbol string pool drops the names no longer used:
// ORC keeps dead entries until told, which a runtime that compiles and drops closures for ever
// would otherwise accumulate. Sweeping walks the whole pool, hence not on every removal.
constexpr size_t kRemovalsPerPoolSweep = 256;

}  // namespace

Expected<ModuleHandle> Engine::Impl::add(ThreadSafeModule module, StringRef name,
                                         LinkedModule* report, CompiledModule* keep,
                                         OwnerId owner) {
  auto context = [&] { return jit_error("cannot add module '" + name + "'"); };
  llvm::orc::SymbolLookupSet definitions;
  // For `report`: the IR names of the definitions whose linker names differ (none on ELF, where
  // names are not mangled, but the module's own strings are gone once it is compiled).
  IRNames ir_names;
  Error prepared = module.withModuleDo([&](llvm::Module& m) -> Error {
    m.setModuleIdentifier(name);
    if (m.getTargetTriple().empty()) m.setTargetTriple(jit->getTargetTriple().str());
    std::string problems;
    llvm::raw_string_ostream out(problems);
    if (llvm::verifyModule(m, &out))
      return jit_error("invalid IR: " + llvm::StringRef(problems).trim());
    if (has_static_initializers(m))
      return jit_error(
          "static constructors/destructors (llvm.global_ctors/dtors) are not "
          "supported; call the module's initialization explicitly");
    for (const llvm::GlobalValue& value : m.global_values()) {
      if (value.isDeclarationForLinker() || value.hasLocalLinkage() || value.hasAppendingLinkage())
        continue;
      llvm::orc::SymbolStringPtr symbol = jit->mangleAndIntern(value.getName());
      if (report != nullptr && *symbol != value.getName()) ir_names[symbol] = value.getName().str();
      definitions.add(std::move(symbol));
    }
    return Error::success();
  });
  if (prepared) return llvm::joinErrors(context(), std::move(prepared));
  uint64_t token = 0;
  if (keep != nullptr) {
    token = objects.expect();
    module.withModuleDo([&](llvm::Module& m) { ObjectKeeper::tag(m, token); });
  }
  return link(name, owner, std::move(definitions), std::move(ir_names), report, keep, token,
              [&](const llvm::orc::ResourceTrackerSP& tracker) {
                return jit->addIRModule(tracker, std::move(module));
              });
}

Expected<ModuleHandle> Engine::Impl::link(StringRef name, OwnerId owner,
                                          llvm::orc::SymbolLookupSet definitions, IRNames ir_names,
                                          LinkedModule* report, CompiledModule* keep,
                                          uint64_t token, AddTo add_to) {
  auto context = [&] { return jit_error("cannot add module '" + name + "'"); };
  // The module's one identity, from its heap blocks up (ModuleHandle): the caller's owner, or
  // one registered here, which a failed link retires again.
  const OwnerId given = owner;
  if (owner == kNoOwner) owner = heap.register_owner(name.str());
  llvm::orc::ResourceTrackerSP tracker = main().createResourceTracker();
  // The entry must exist before anyone can materialize the module.
  const llvm::orc::ResourceKey key = tracker->getKeyUnsafe();
  links->expect(key, owner, /*count_bytes=*/report != nullptr);
  std::optional<llvm::orc::SymbolLookupSet> kept_definitions;
  if (keep != nullptr) {
    *keep = CompiledModule();
    kept_definitions = definitions;
  }
  auto fail = [&](Error err) -> Error {
    links->take(key);
    std::unique_ptr<llvm::MemoryBuffer> object = token != 0 ? objects.take(token) : nullptr;
    if (object != nullptr && is_out_of_memory(err)) {
      keep->state_ = std::make_unique<CompiledModule::State>(CompiledModule::State{
          name.str(), given, std::move(object), std::move(*kept_definitions), std::move(ir_names)});
    }
    err = llvm::joinErrors(llvm::joinErrors(context(), std::move(err)), tracker->remove());
    if (given == kNoOwner) heap.retire_owner(owner);  // its blocks, if any, are gone already
    return err;
  };
  if (Error err = add_to(tracker)) return fail(std::move(err));

  // Link now (see engine.h): looking up every definition materializes the whole module.
  llvm::orc::SymbolMap addresses;
  if (!definitions.empty()) {
    ReportedErrors reported;
    auto linked = jit->getExecutionSession().lookup(
        llvm::orc::makeJITDylibSearchOrder(&main(),
                                           llvm::orc::JITDylibLookupFlags::MatchAllSymbols),
        std::move(definitions));
    Error causes = reported.take();
    if (!linked) {
      Error err = linked.takeError();
      if (causes) {
        // The causes say everything; the lookup's own error only lists our symbols.
        llvm::consumeError(std::move(err));
        err = std::move(causes);
      }
      return fail(std::move(err));
    }
    if (causes)
      log->warn("module '{}' linked, but: {}", name.str(), llvm::toString(std::move(causes)));
    addresses = std::move(*linked);
  }
  if (token != 0) objects.take(token);
  const uint64_t heap_bytes = links->take(key);
  if (report != nullptr) {
    report->heap_bytes = heap_bytes;
    report->definitions.clear();
    for (const auto& [symbol, definition] : addresses) {
      auto renamed = ir_names.find(symbol);
      report->definitions[renamed != ir_names.end() ? StringRef(renamed->second) : *symbol] =
          definition.getAddress();
    }
  }

  std::lock_guard<std::mutex> lock(modules_mutex);
  const ModuleHandle handle{owner};
  LiveModule live{std::move(tracker), name.str(), {}};
  live.definitions.reserve(addresses.size());
  for (auto& [symbol, definition] : addresses) {
    linked[symbol] = definition.getAddress();
    live.definitions.push_back(symbol);
  }
  modules.emplace(owner, std::move(live));
  if (report != nullptr) report->handle = handle;
  log->debug("added module '{}' as owner {}", name.str(), owner);
  return handle;
}

Error Engine::Impl::remove(ModuleHandle handle) {
  LiveModule module;
  bool sweep = false;
  {
    std::lock_guard<std::mutex> lock(modules_mutex);
    auto it = modules.find(handle.owner);
    if (it == modules.end())
      return jit_error(
          llvm::formatv("cannot remove module of owner {0}: no such module (never added "
                        "to this engine, or already removed)",
                        handle.owner));
    module = std::move(it->second);
    modules.erase(it);
    for (const llvm::orc::SymbolStringPtr& symbol : module.definitions) linked.erase(symbol);
    if (++removals_since_sweep == kRemovalsPerPoolSweep) {
      removals_since_sweep = 0;
      sweep = true;
    }
  }
  Error err = end(handle.owner, module);
  if (sweep) jit->getExecutionSession().getSymbolStringPool()->clearDeadEntries();
  if (err)
    return llvm::joinErrors(jit_error("removing module '" + module.name + "'"), std::move(err));
  log->debug("removed module '{}' (owner {})", module.name, handle.owner);
  return Error::success();
}

Error Engine::Impl::end(OwnerId owner, LiveModule& module) {
  Error err = module.tracker->remove();
  module.tracker.reset();  // the pool entries of its symbols die with the tracker
  // Linked modules had their owner retired by the memory manager with the blocks.
  if (module.definitions.empty()) {
    if (Result<void> retired = heap.end_group(owner, Exit::kRetire); !retired)
      err = llvm::joinErrors(std::move(err), to_llvm_error(std::move(retired.error())));
  }
  module.definitions.clear();
  return err;
}

Engine::Impl::~Impl() {
  cells.clear();  // their stubs go first, as before any module
  // Each module's tracker is removed, not just dropped: a dropped tracker hands its resources
  // to the JITDylib's default tracker, and LLVM 19's ObjectLinkingLayer::handleTransferResources
  // keeps a reference into its allocation map across the insertion of the default tracker's
  // entry. When that insertion grows the map, the first module transferred loses its allocation:
  // never deallocated, its blocks stay live and its eh_frame registered after the heap has
  // reused or unmapped them (the next exception thrown anywhere then reads freed memory).
  std::vector<OwnerId> owners;
  owners.reserve(modules.size());
  for (const auto& [owner, module] : modules) owners.push_back(owner);
  std::sort(owners.begin(), owners.end());
  for (OwnerId owner : owners) {
    LiveModule& module = modules.find(owner)->second;
    if (Error err = end(owner, module)) {
      log->error("removing module '{}' (owner {}) with its engine: {}", module.name, owner,
                 llvm::toString(std::move(err)));
    }
  }
  modules.clear();
  linked.clear();
}

Expected<ExecutorAddr> Engine::Impl::lookup(StringRef name) {
  const llvm::orc::SymbolStringPtr symbol = jit->mangleAndIntern(name);
  {
    std::lock_guard<std::mutex> lock(modules_mutex);
    auto it = linked.find(symbol);
    if (it != linked.end()) return it->second;
  }
  return jit->lookup(name);
}

}  // namespace codeheap::jit
