#include "jit/engine.h"

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "codeheap/log.h"
#include "jit/eh_frame_plugin.h"
#include "jit/entry_cell.h"
#include "jit/error.h"
#include "jit/link_plugin.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/ExecutionEngine/Orc/Core.h"
#include "llvm/ExecutionEngine/Orc/CompileUtils.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/IR/Constants.h"
#include "llvm/IR/GlobalVariable.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Metadata.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

namespace codeheap::jit {

using llvm::Error;
using llvm::Expected;
using llvm::StringRef;
using llvm::orc::ExecutorAddr;
using llvm::orc::ThreadSafeModule;

// MemProt's bitwise operators live in namespace llvm; this pulls them in.
LLVM_ENABLE_BITMASK_ENUMS_IN_NAMESPACE();

namespace {

Error makeError(const llvm::Twine& message) {
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

  Error take() { return std::move(errors_); }

  // False if no link is collecting on this thread.
  static bool deliver(Error& err) {
    if (current_ == nullptr) return false;
    current_->errors_ = llvm::joinErrors(std::move(current_->errors_), std::move(err));
    return true;
  }

 private:
  static thread_local ReportedErrors* current_;
  ReportedErrors* previous_;
  Error errors_ = Error::success();
};

thread_local ReportedErrors* ReportedErrors::current_ = nullptr;

// Object code that linkModule keeps for a second link (CompiledModule), by a token. The module
// carries its token as named metadata from linkModule to the compiler, which may run on another
// thread (the one whose lookup materializes the module first); the compiler removes it before
// generating code and puts a copy of the object here.
class ObjectKeeper {
 public:
  static constexpr const char* kMetadata = "codeheap.keep_object";

  uint64_t expect() {
    std::lock_guard<std::mutex> lock(mutex_);
    const uint64_t token = next_++;
    objects_[token] = nullptr;
    return token;
  }
  void put(uint64_t token, std::unique_ptr<llvm::MemoryBuffer> object) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = objects_.find(token);
    if (it != objects_.end()) it->second = std::move(object);
  }
  std::unique_ptr<llvm::MemoryBuffer> take(uint64_t token) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = objects_.find(token);
    if (it == objects_.end()) return nullptr;
    std::unique_ptr<llvm::MemoryBuffer> object = std::move(it->second);
    objects_.erase(it);
    return object;
  }

  static void tag(llvm::Module& module, uint64_t token) {
    llvm::LLVMContext& context = module.getContext();
    module.getOrInsertNamedMetadata(kMetadata)->addOperand(
        llvm::MDNode::get(context, llvm::MDString::get(context, std::to_string(token))));
  }
  // The module's token (0: none), removed from the module.
  static uint64_t untag(llvm::Module& module) {
    llvm::NamedMDNode* tag = module.getNamedMetadata(kMetadata);
    if (tag == nullptr) return 0;
    uint64_t token = 0;
    if (tag->getNumOperands() == 1 && tag->getOperand(0)->getNumOperands() == 1) {
      if (auto* text = llvm::dyn_cast<llvm::MDString>(tag->getOperand(0)->getOperand(0))) {
        if (text->getString().getAsInteger(10, token)) token = 0;
      }
    }
    module.eraseNamedMetadata(tag);
    return token;
  }

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
  PooledIRCompiler(llvm::orc::JITTargetMachineBuilder builder, ObjectKeeper& keeper)
      : IRCompiler(llvm::orc::irManglingOptionsFromTargetOptions(builder.getOptions())),
        builder_(std::move(builder)), keeper_(keeper) {}

  Expected<std::unique_ptr<llvm::MemoryBuffer>> operator()(llvm::Module& module) override {
    const uint64_t token = ObjectKeeper::untag(module);
    std::unique_ptr<llvm::TargetMachine> machine;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!idle_.empty()) {
        machine = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!machine) {
      auto made = builder_.createTargetMachine();
      if (!made) return made.takeError();
      machine = std::move(*made);
    }
    auto object = llvm::orc::SimpleCompiler(*machine)(module);
    if (token != 0 && object) {
      keeper_.put(token, llvm::MemoryBuffer::getMemBufferCopy((*object)->getBuffer(),
                                                              (*object)->getBufferIdentifier()));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.push_back(std::move(machine));
    return object;
  }

 private:
  llvm::orc::JITTargetMachineBuilder builder_;
  ObjectKeeper& keeper_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<llvm::TargetMachine>> idle_;
};

// llvm.global_ctors / llvm.global_dtors with at least one entry.
bool hasStaticInitializers(const llvm::Module& module) {
  for (const char* name : {"llvm.global_ctors", "llvm.global_dtors"}) {
    const llvm::GlobalVariable* list = module.getNamedGlobal(name);
    if (list != nullptr && list->hasInitializer() && !list->getInitializer()->isNullValue())
      return true;
  }
  return false;
}

// Turns the module into the body of one version of the redefinable function `name`: the
// definition of `name` is renamed to `body_name`, the only symbol it exports; everything else
// it defines becomes internal, so two versions alive at once (the new one is linked before the
// old one is removed) never define the same symbol.
Error makeBody(llvm::Module& module, StringRef name, StringRef body_name) {
  llvm::Function* function = module.getFunction(name);
  if (function == nullptr || function->isDeclaration())
    return makeError("module '" + module.getModuleIdentifier() + "' does not define function '" +
                     name + "'");
  for (llvm::GlobalValue& value : module.global_values()) {
    if (&value == function || value.isDeclaration() || value.hasLocalLinkage() ||
        value.hasAppendingLinkage())
      continue;
    value.setVisibility(llvm::GlobalValue::DefaultVisibility);  // required for local linkage
    value.setLinkage(llvm::GlobalValue::InternalLinkage);
    if (auto* object = llvm::dyn_cast<llvm::GlobalObject>(&value)) object->setComdat(nullptr);
  }
  function->setName(body_name);
  if (function->getName() != body_name)  // LLVM uniqued it: the module already used the name
    return makeError("module '" + module.getModuleIdentifier() + "' already defines '" +
                     body_name + "', the engine's private name for a version of '" + name + "'");
  function->setLinkage(llvm::GlobalValue::ExternalLinkage);
  function->setVisibility(llvm::GlobalValue::DefaultVisibility);
  function->setComdat(nullptr);
  return Error::success();
}

Expected<ThreadSafeModule> parseModule(StringRef ir_text, StringRef name) {
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module =
      llvm::parseAssembly(llvm::MemoryBufferRef(ir_text, name), diagnostic, *context);
  if (!module) {
    return makeError(llvm::formatv("cannot parse module '{0}': line {1}, column {2}: {3}", name,
                                   diagnostic.getLineNo(), diagnostic.getColumnNo() + 1,
                                   diagnostic.getMessage()));
  }
  return ThreadSafeModule(std::move(module), std::move(context));
}

// Sums LinkedModule::heap_bytes for the modules that Engine::linkModule links, in a pass after
// allocation, when every block of the graph (GOT and stubs included) has its address. Entries are
// keyed by the module's resource tracker and made before the module is added, so the bytes
// reach the caller whichever thread materializes the module (another module's lookup may).
// Modules added without an entry get no pass.
class HeapBytesRecorder final : public llvm::orc::ObjectLinkingLayer::Plugin {
 public:
  void expect(llvm::orc::ResourceKey key) {
    std::lock_guard<std::mutex> lock(mutex_);
    bytes_[key] = 0;
  }
  uint64_t take(llvm::orc::ResourceKey key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = bytes_.find(key);
    if (it == bytes_.end()) return 0;
    const uint64_t bytes = it->second;
    bytes_.erase(it);
    return bytes;
  }

  void modifyPassConfig(llvm::orc::MaterializationResponsibility& responsibility,
                        llvm::jitlink::LinkGraph&,
                        llvm::jitlink::PassConfiguration& config) override {
    llvm::orc::ResourceKey key = 0;
    // Fails only for a tracker removed meanwhile, whose link fails anyway.
    if (Error err = responsibility.withResourceKeyDo([&](llvm::orc::ResourceKey k) { key = k; })) {
      llvm::consumeError(std::move(err));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!bytes_.contains(key)) return;
    }
    config.PostAllocationPasses.push_back([this, key](llvm::jitlink::LinkGraph& graph) {
      const uint64_t bytes = heapBytes(graph);
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = bytes_.find(key);
      if (it != bytes_.end()) it->second += bytes;
      return Error::success();
    });
  }

  // The entries belong to linkModule calls, which drop them however the link ends.
  Error notifyFailed(llvm::orc::MaterializationResponsibility&) override {
    return Error::success();
  }
  Error notifyRemovingResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey) override {
    return Error::success();
  }
  void notifyTransferringResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey,
                                   llvm::orc::ResourceKey) override {}

 private:
  // The heap block of each standard-lifetime segment as HeapJITLinkMemoryManager lays it out:
  // from the segment's first block, aligned down to the segment's largest alignment (where the
  // heap block starts), to its last block's end, rounded up to the heap's 16-byte granule.
  static uint64_t heapBytes(llvm::jitlink::LinkGraph& graph) {
    constexpr uint64_t kGranule = 16;  // heap.h: a block's footprint
    struct Span {
      llvm::orc::MemProt prot;
      uint64_t begin = UINT64_MAX;
      uint64_t end = 0;
      uint64_t alignment = 1;
    };
    llvm::SmallVector<Span, 4> spans;
    for (llvm::jitlink::Section& section : graph.sections()) {
      if (section.getMemLifetime() != llvm::orc::MemLifetime::Standard || section.empty())
        continue;
      auto span =
          llvm::find_if(spans, [&](const Span& s) { return s.prot == section.getMemProt(); });
      if (span == spans.end()) span = &spans.emplace_back(Span{section.getMemProt()});
      for (llvm::jitlink::Block* block : section.blocks()) {
        const uint64_t address = block->getAddress().getValue();
        span->begin = std::min(span->begin, address);
        span->end = std::max(span->end, address + block->getSize());
        span->alignment = std::max<uint64_t>(span->alignment, block->getAlignment());
      }
    }
    uint64_t bytes = 0;
    for (const Span& s : spans) {
      const uint64_t start = llvm::alignDown(s.begin, s.alignment);
      bytes += llvm::alignTo(std::max<uint64_t>(s.end - start, 1), kGranule);
    }
    return bytes;
  }

  std::mutex mutex_;
  llvm::DenseMap<llvm::orc::ResourceKey, uint64_t> bytes_;
};

// Names every function of each linked graph in the heap (Heap::add_symbols) once its addresses
// are assigned, so that Heap::describe (a crash report) can say which JIT function a pc is in
// without a lock. The names go with their blocks.
class FunctionNamer final : public StatelessLinkPlugin {
 public:
  explicit FunctionNamer(Heap& heap) : heap_(heap) {}

  void modifyPassConfig(llvm::orc::MaterializationResponsibility&, llvm::jitlink::LinkGraph&,
                        llvm::jitlink::PassConfiguration& config) override {
    config.PostAllocationPasses.push_back([this](llvm::jitlink::LinkGraph& graph) {
      name(graph);
      return Error::success();
    });
  }

 private:
  void name(llvm::jitlink::LinkGraph& graph) {
    llvm::SmallVector<SymbolRange, 8> functions;
    for (const llvm::jitlink::Symbol* symbol : graph.defined_symbols()) {
      const llvm::jitlink::Section& section = symbol->getBlock().getSection();
      if (!symbol->hasName() || !symbol->isCallable() ||
          section.getMemLifetime() != llvm::orc::MemLifetime::Standard ||
          (section.getMemProt() & llvm::orc::MemProt::Exec) == llvm::orc::MemProt::None)
        continue;
      functions.push_back(
          {symbol->getAddress().getValue(), symbol->getSize(), symbol->getName()});
    }
    // A refusal only costs a crash report the function's name; the link goes on.
    if (auto added = heap_.add_symbols(functions); !added)
      logger("jit")->debug("graph '{}': {}", graph.getName(), added.error().message);
  }

  Heap& heap_;
};

// After this many removals the session's symbol string pool drops the names no longer used:
// ORC keeps dead entries until told, which a runtime that compiles and drops closures for ever
// would otherwise accumulate. Sweeping walks the whole pool, hence not on every removal.
constexpr size_t kRemovalsPerPoolSweep = 256;

}  // namespace

struct CompiledModule::State {
  std::string name;
  std::unique_ptr<llvm::MemoryBuffer> object;
  llvm::orc::SymbolLookupSet definitions;
  llvm::DenseMap<llvm::orc::SymbolStringPtr, std::string> ir_names;
};

Expected<llvm::orc::JITTargetMachineBuilder> targetMachineBuilder(const EngineOptions& options) {
  static const bool native_target_missing = [] {
    return llvm::InitializeNativeTarget() || llvm::InitializeNativeTargetAsmPrinter() ||
           llvm::InitializeNativeTargetAsmParser();
  }();
  if (native_target_missing) return makeError("LLVM has no native target for this host");
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder) return builder.takeError();
  builder->setCodeModel(options.code_model)
      .setRelocationModel(options.relocation_model)
      .setCodeGenOptLevel(options.opt_level);
  return builder;
}

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

  Impl(Heap& heap, EngineOptions options)
      : heap(heap),
        options(std::move(options)),
        log(codeheap::logger("jit")),
        memory(heap, this->options.retire_mode),
        heap_bytes(std::make_shared<HeapBytesRecorder>()) {}

  Expected<std::unique_ptr<llvm::orc::ObjectLayer>> createLinkingLayer(
      llvm::orc::ExecutionSession& session) {
    auto layer = std::make_unique<llvm::orc::ObjectLinkingLayer>(session, memory);
    // Frames stay registered until the heap reclaims a removed module (eh_frame_plugin.h).
    layer->addPlugin(std::make_unique<DeferredEHFramePlugin>());
    layer->addPlugin(heap_bytes);
    layer->addPlugin(std::make_unique<FunctionNamer>(heap));
    if (Error err = addVisibilityPlugins(*layer, session, options.visibility))
      return err;
    for (const auto& plugin : options.plugins) layer->addPlugin(plugin);
    return std::unique_ptr<llvm::orc::ObjectLayer>(std::move(layer));
  }

  llvm::orc::JITDylib& main() { return jit->getMainJITDylib(); }

  // Adds and links `module`; fills `report` (handle, definitions, heap bytes) if given, and
  // `keep` (see Engine::linkModule) if given and the heap is full.
  Expected<ModuleHandle> add(ThreadSafeModule module, StringRef name,
                             LinkedModule* report = nullptr, CompiledModule* keep = nullptr) {
    auto context = [&] { return makeError("cannot add module '" + name + "'"); };
    llvm::orc::SymbolLookupSet definitions;
    // For `report`: the IR names of the definitions whose linker names differ (none on ELF, where
    // names are not mangled, but the module's own strings are gone once it is compiled).
    llvm::DenseMap<llvm::orc::SymbolStringPtr, std::string> ir_names;
    Error prepared = module.withModuleDo([&](llvm::Module& m) -> Error {
      m.setModuleIdentifier(name);
      if (m.getTargetTriple().empty()) m.setTargetTriple(jit->getTargetTriple().str());
      std::string problems;
      llvm::raw_string_ostream out(problems);
      if (llvm::verifyModule(m, &out)) return makeError("invalid IR: " + llvm::StringRef(problems).trim());
      if (hasStaticInitializers(m))
        return makeError("static constructors/destructors (llvm.global_ctors/dtors) are not "
                         "supported; call the module's initialization explicitly");
      for (const llvm::GlobalValue& value : m.global_values()) {
        if (value.isDeclarationForLinker() || value.hasLocalLinkage() ||
            value.hasAppendingLinkage())
          continue;
        llvm::orc::SymbolStringPtr symbol = jit->mangleAndIntern(value.getName());
        if (report != nullptr && *symbol != value.getName())
          ir_names[symbol] = value.getName().str();
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
    return link(name, std::move(definitions), std::move(ir_names), report, keep, token,
                [&](const llvm::orc::ResourceTrackerSP& tracker) {
                  return jit->addIRModule(tracker, std::move(module));
                });
  }

  // Links what `add_to` adds to a new resource tracker (a module, or a kept module's object):
  // looks up `definitions` and reports them under their IR names. `token` names the object that
  // `keep` receives when the heap is full (0: none).
  using IRNames = llvm::DenseMap<llvm::orc::SymbolStringPtr, std::string>;
  using AddTo = llvm::function_ref<Error(const llvm::orc::ResourceTrackerSP&)>;
  Expected<ModuleHandle> link(StringRef name, llvm::orc::SymbolLookupSet definitions,
                              IRNames ir_names, LinkedModule* report, CompiledModule* keep,
                              uint64_t token, AddTo add_to) {
    auto context = [&] { return makeError("cannot add module '" + name + "'"); };
    llvm::orc::ResourceTrackerSP tracker = main().createResourceTracker();
    // The recorder's entry must exist before anyone can materialize the module.
    const llvm::orc::ResourceKey key = tracker->getKeyUnsafe();
    if (report != nullptr) heap_bytes->expect(key);
    std::optional<llvm::orc::SymbolLookupSet> kept_definitions;
    if (keep != nullptr) {
      *keep = CompiledModule();
      kept_definitions = definitions;
    }
    auto fail = [&](Error err) -> Error {
      if (report != nullptr) heap_bytes->take(key);
      std::unique_ptr<llvm::MemoryBuffer> object = token != 0 ? objects.take(token) : nullptr;
      if (object != nullptr && isOutOfMemory(err)) {
        keep->state_ = std::make_unique<CompiledModule::State>(CompiledModule::State{
            name.str(), std::move(object), std::move(*kept_definitions), std::move(ir_names)});
      }
      return llvm::joinErrors(llvm::joinErrors(context(), std::move(err)), tracker->remove());
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
      if (causes) log->warn("module '{}' linked, but: {}", name.str(), llvm::toString(std::move(causes)));
      addresses = std::move(*linked);
    }
    if (token != 0) objects.take(token);
    if (report != nullptr) {
      report->heap_bytes = heap_bytes->take(key);
      report->definitions.clear();
      for (const auto& [symbol, definition] : addresses) {
        auto renamed = ir_names.find(symbol);
        report->definitions[renamed != ir_names.end() ? StringRef(renamed->second) : *symbol] =
            definition.getAddress();
      }
    }

    std::lock_guard<std::mutex> lock(modules_mutex);
    ModuleHandle handle{next_module_id++};
    LiveModule live{std::move(tracker), name.str(), {}};
    live.definitions.reserve(addresses.size());
    for (auto& [symbol, definition] : addresses) {
      linked[symbol] = definition.getAddress();
      live.definitions.push_back(symbol);
    }
    modules.emplace(handle.id, std::move(live));
    if (report != nullptr) report->handle = handle;
    log->debug("added module '{}' as #{}", name.str(), handle.id);
    return handle;
  }

  Error remove(ModuleHandle handle) {
    LiveModule module;
    bool sweep = false;
    {
      std::lock_guard<std::mutex> lock(modules_mutex);
      auto it = modules.find(handle.id);
      if (it == modules.end())
        return makeError(llvm::formatv("cannot remove module #{0}: no such module (never added "
                                       "to this engine, or already removed)",
                                       handle.id));
      module = std::move(it->second);
      modules.erase(it);
      for (const llvm::orc::SymbolStringPtr& symbol : module.definitions) linked.erase(symbol);
      if (++removals_since_sweep == kRemovalsPerPoolSweep) {
        removals_since_sweep = 0;
        sweep = true;
      }
    }
    Error err = module.tracker->remove();
    module.tracker.reset();  // the pool entries of its symbols die with the tracker
    module.definitions.clear();
    if (sweep) jit->getExecutionSession().getSymbolStringPool()->clearDeadEntries();
    if (err) return llvm::joinErrors(makeError("removing module '" + module.name + "'"), std::move(err));
    log->debug("removed module '{}' (#{})", module.name, handle.id);
    return Error::success();
  }

  Heap& heap;
  EngineOptions options;
  std::shared_ptr<spdlog::logger> log;
  ObjectKeeper objects;             // used by `jit`'s compiler
  HeapJITLinkMemoryManager memory;  // outlives `jit`, whose allocations it holds
  std::shared_ptr<HeapBytesRecorder> heap_bytes;  // one of the linking layer's plugins
  std::unique_ptr<llvm::orc::LLJIT> jit;

  // The address of every definition of a live module, as its eager link resolved it, so
  // looking up a module's function (what a runtime does after each compilation) costs a hash
  // lookup instead of a session lookup. Entry cells and host symbols are not in it.
  Expected<ExecutorAddr> lookup(StringRef name) {
    const llvm::orc::SymbolStringPtr symbol = jit->mangleAndIntern(name);
    {
      std::lock_guard<std::mutex> lock(modules_mutex);
      auto it = linked.find(symbol);
      if (it != linked.end()) return it->second;
    }
    return jit->lookup(name);
  }

  mutable std::mutex modules_mutex;
  std::unordered_map<uint64_t, LiveModule> modules;
  llvm::DenseMap<llvm::orc::SymbolStringPtr, ExecutorAddr> linked;
  uint64_t next_module_id = 1;
  size_t removals_since_sweep = 0;

  std::mutex cells_mutex;  // serializes defineFunction
  llvm::StringMap<Cell> cells;
  uint64_t next_version = 1;
};

Expected<std::unique_ptr<Engine>> Engine::create(Heap& heap, EngineOptions options) {
  auto target = targetMachineBuilder(options);
  if (!target) return target.takeError();

  auto impl = std::make_unique<Impl>(heap, std::move(options));
  Impl* state = impl.get();
  llvm::orc::LLJITBuilder builder;
  builder.setJITTargetMachineBuilder(std::move(*target))
      .setObjectLinkingLayerCreator(
          [state](llvm::orc::ExecutionSession& session, const llvm::Triple&) {
            return state->createLinkingLayer(session);
          })
      .setPlatformSetUp(llvm::orc::setUpInactivePlatform)
      // Each caller compiles on its own thread (see engine.h), with a pooled TargetMachine. Not
      // LLJIT's SupportConcurrentCompilation, which would also move linking to a thread pool
      // and so separate a failed link's errors from the thread that asked.
      .setCompileFunctionCreator([state](llvm::orc::JITTargetMachineBuilder machine)
                                     -> Expected<std::unique_ptr<llvm::orc::IRCompileLayer::IRCompiler>> {
        return std::make_unique<PooledIRCompiler>(std::move(machine), state->objects);
      });
  if (state->options.link_process_symbols) {
    // In-process dlsym: the default would go through the ExecutorProcessControl's wrapper
    // calls, which buys nothing when the JIT and its code share the process.
    builder.setProcessSymbolsJITDylibSetup(
        [](llvm::orc::LLJIT& jit) -> Expected<llvm::orc::JITDylibSP> {
          auto generator = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
              jit.getDataLayout().getGlobalPrefix());
          if (!generator) return generator.takeError();
          llvm::orc::JITDylib& dylib =
              jit.getExecutionSession().createBareJITDylib("<process symbols>");
          dylib.addGenerator(std::move(*generator));
          return &dylib;
        });
  } else {
    builder.setLinkProcessSymbolsByDefault(false);
  }
  auto jit = builder.create();
  if (!jit) return jit.takeError();
  state->jit = std::move(*jit);
  state->jit->getExecutionSession().setErrorReporter([log = state->log](Error err) {
    if (!ReportedErrors::deliver(err)) log->error("JIT session: {}", llvm::toString(std::move(err)));
  });
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

CompiledModule::CompiledModule() = default;
CompiledModule::~CompiledModule() = default;
CompiledModule::CompiledModule(CompiledModule&&) noexcept = default;
CompiledModule& CompiledModule::operator=(CompiledModule&&) noexcept = default;

StringRef CompiledModule::name() const { return state_ ? StringRef(state_->name) : StringRef(); }

size_t CompiledModule::objectBytes() const {
  return state_ && state_->object ? state_->object->getBufferSize() : 0;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() = default;

Expected<ModuleHandle> Engine::addModule(ThreadSafeModule module, StringRef name) {
  return impl_->add(std::move(module), name);
}

Expected<ModuleHandle> Engine::addModule(StringRef ir_text, StringRef name) {
  auto module = parseModule(ir_text, name);
  if (!module) return module.takeError();
  return impl_->add(std::move(*module), name);
}

Expected<LinkedModule> Engine::linkModule(ThreadSafeModule module, StringRef name,
                                          CompiledModule* keep_if_out_of_memory) {
  LinkedModule linked;
  if (auto handle = impl_->add(std::move(module), name, &linked, keep_if_out_of_memory); !handle)
    return handle.takeError();
  return linked;
}

Expected<LinkedModule> Engine::linkModule(CompiledModule compiled,
                                          CompiledModule* keep_if_out_of_memory) {
  if (!compiled) return makeError("linkModule: the CompiledModule is empty");
  CompiledModule::State& kept = *compiled.state_;
  uint64_t token = 0;
  if (keep_if_out_of_memory != nullptr) {
    token = impl_->objects.expect();
    impl_->objects.put(token, llvm::MemoryBuffer::getMemBufferCopy(
                                  kept.object->getBuffer(), kept.object->getBufferIdentifier()));
  }
  LinkedModule linked;
  auto handle = impl_->link(kept.name, std::move(kept.definitions), std::move(kept.ir_names),
                            &linked, keep_if_out_of_memory, token,
                            [&](const llvm::orc::ResourceTrackerSP& tracker) {
                              return impl_->jit->addObjectFile(tracker, std::move(kept.object));
                            });
  if (!handle) return handle.takeError();
  return linked;
}

Error Engine::removeModule(ModuleHandle handle) { return impl_->remove(handle); }

const llvm::Triple& Engine::targetTriple() const { return impl_->jit->getTargetTriple(); }

const llvm::DataLayout& Engine::dataLayout() const { return impl_->jit->getDataLayout(); }

size_t Engine::liveModules() const {
  std::lock_guard<std::mutex> lock(impl_->modules_mutex);
  return impl_->modules.size();
}

Expected<ExecutorAddr> Engine::lookup(StringRef name) { return impl_->lookup(name); }

Error Engine::defineHostSymbols(const llvm::StringMap<ExecutorAddr>& symbols) {
  llvm::orc::SymbolMap definitions;
  for (const auto& entry : symbols) {
    definitions[impl_->jit->mangleAndIntern(entry.getKey())] =
        llvm::orc::ExecutorSymbolDef(entry.getValue(), llvm::JITSymbolFlags::Exported);
  }
  return impl_->main().define(llvm::orc::absoluteSymbols(std::move(definitions)));
}

Expected<ExecutorAddr> Engine::defineFunction(StringRef name, ThreadSafeModule module) {
  Impl& impl = *impl_;
  auto context = [&] { return makeError("cannot define function '" + name + "'"); };
  std::lock_guard<std::mutex> lock(impl.cells_mutex);
  auto existing = impl.cells.find(name);
  llvm::orc::SymbolStringPtr symbol = impl.jit->mangleAndIntern(name);

  if (existing == impl.cells.end()) {
    // Refuse a name that is taken before spending a compilation on it.
    auto taken = impl.jit->getExecutionSession().lookupFlags(
        llvm::orc::LookupKind::Static,
        llvm::orc::makeJITDylibSearchOrder(&impl.main(),
                                           llvm::orc::JITDylibLookupFlags::MatchAllSymbols),
        llvm::orc::SymbolLookupSet(symbol, llvm::orc::SymbolLookupFlags::WeaklyReferencedSymbol));
    if (!taken) return llvm::joinErrors(context(), taken.takeError());
    if (!taken->empty())
      return llvm::joinErrors(context(),
                              makeError("'" + name + "' is already defined by a module or as a "
                                        "host symbol, so it cannot become redefinable"));
  }

  const std::string body_name = llvm::formatv("{0}.v{1}", name, impl.next_version++).str();
  if (Error err = module.withModuleDo(
          [&](llvm::Module& m) { return makeBody(m, name, body_name); }))
    return llvm::joinErrors(context(), std::move(err));
  auto body_module = impl.add(std::move(module), body_name);
  if (!body_module) return body_module.takeError();
  auto body = impl.lookup(body_name);
  if (!body) return llvm::joinErrors(body.takeError(), impl.remove(*body_module));

  if (existing != impl.cells.end()) {
    Impl::Cell& cell = existing->second;
    cell.cell->setTarget(*body);
    const ModuleHandle previous = std::exchange(cell.body, *body_module);
    // The new version is in place whatever happens here; a failure means the heap refused to
    // take the old blocks back, which is a heap bug to report, not this call's failure.
    if (Error err = impl.remove(previous))
      impl.log->error("retiring the previous version of '{}': {}", name.str(),
                      llvm::toString(std::move(err)));
    impl.log->debug("redefined '{}' as {}", name.str(), body_name);
    return cell.cell->address();
  }

  auto cell = EntryCell::create(impl.heap, name, *body);
  if (!cell)
    return llvm::joinErrors(llvm::joinErrors(context(), cell.takeError()),
                            impl.remove(*body_module));
  llvm::orc::SymbolMap definition;
  definition[symbol] = llvm::orc::ExecutorSymbolDef(
      (*cell)->address(), llvm::JITSymbolFlags::Exported | llvm::JITSymbolFlags::Callable);
  if (Error err = impl.main().define(llvm::orc::absoluteSymbols(std::move(definition))))
    return llvm::joinErrors(llvm::joinErrors(context(), std::move(err)),
                            impl.remove(*body_module));
  const ExecutorAddr stub = (*cell)->address();
  impl.cells[name] = Impl::Cell{std::move(*cell), *body_module};
  impl.log->debug("defined '{}' as {} behind entry cell {:#x}", name.str(), body_name,
                  stub.getValue());
  return stub;
}

Expected<ExecutorAddr> Engine::defineFunction(StringRef name, StringRef ir_text) {
  auto module = parseModule(ir_text, name);
  if (!module) return module.takeError();
  return defineFunction(name, std::move(*module));
}

}  // namespace codeheap::jit
