// The engine's creation, its public members and entry cells (redefinable functions). Modules are
// added and removed in engine_modules.cc, compiled in engine_compiler.cc.
#include "jit/engine.h"

#include <mutex>
#include <string>
#include <utility>

#include "codeheap/log.h"
#include "jit/eh_frame_plugin.h"
#include "jit/engine_internal.h"
#include "jit/entry_cell.h"
#include "jit/visibility.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"

namespace codeheap::jit {

using engine_internal::jit_error;
using engine_internal::parse_module;
using llvm::Error;
using llvm::Expected;
using llvm::StringRef;
using llvm::orc::ExecutorAddr;
using llvm::orc::ThreadSafeModule;

namespace {

// Turns the module into the body of one version of the redefinable function `name`: the
// definition of `name` is renamed to `body_name`, the only symbol it exports; everything else
// it defines becomes internal, so two versions alive at once (the new one is linked before the
// old one is removed) never define the same symbol.
Error make_body(llvm::Module& module, StringRef name, StringRef body_name) {
  llvm::Function* function = module.getFunction(name);
  if (function == nullptr || function->isDeclaration())
    return jit_error("module '" + module.getModuleIdentifier() + "' does not define function '" +
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
    return jit_error("module '" + module.getModuleIdentifier() + "' already defines '" + body_name +
                     "', the engine's private name for a version of '" + name + "'");
  function->setLinkage(llvm::GlobalValue::ExternalLinkage);
  function->setVisibility(llvm::GlobalValue::DefaultVisibility);
  function->setComdat(nullptr);
  return Error::success();
}

}  // namespace

Engine::Impl::Impl(Heap& heap, EngineOptions options)
    : heap(heap),
      options(std::move(options)),
      log(codeheap::logger("jit")),
      memory(heap, this->options.retire_mode),
      links(std::make_shared<engine_internal::ModuleLinks>(memory)) {}

Expected<std::unique_ptr<llvm::orc::ObjectLayer>> Engine::Impl::create_linking_layer(
    llvm::orc::ExecutionSession& session) {
  auto layer = std::make_unique<llvm::orc::ObjectLinkingLayer>(session, memory);
  // Frames stay registered until the heap reclaims a removed module (eh_frame_plugin.h).
  layer->addPlugin(std::make_unique<DeferredEHFramePlugin>());
  layer->addPlugin(links);
  layer->addPlugin(engine_internal::make_function_namer(heap));
  if (Error err = add_visibility_plugins(*layer, session, options.visibility)) return err;
  if (options.add_plugins) options.add_plugins(*layer);
  return std::unique_ptr<llvm::orc::ObjectLayer>(std::move(layer));
}

Expected<std::unique_ptr<Engine>> Engine::create(Heap& heap, EngineOptions options) {
  auto target = target_machine_builder(options);
  if (!target) return target.takeError();

  auto impl = std::make_unique<Impl>(heap, std::move(options));
  Impl* state = impl.get();
  llvm::orc::LLJITBuilder builder;
  builder.setJITTargetMachineBuilder(std::move(*target))
      .setObjectLinkingLayerCreator(
          [state](llvm::orc::ExecutionSession& session, const llvm::Triple&) {
            return state->create_linking_layer(session);
          })
      .setPlatformSetUp(llvm::orc::setUpInactivePlatform)
      // Each caller compiles on its own thread (see engine.h), with a pooled TargetMachine. Not
      // LLJIT's SupportConcurrentCompilation, which would also move linking to a thread pool
      // and so separate a failed link's errors from the thread that asked.
      .setCompileFunctionCreator(
          [state](llvm::orc::JITTargetMachineBuilder machine)
              -> Expected<std::unique_ptr<llvm::orc::IRCompileLayer::IRCompiler>> {
            return std::make_unique<engine_internal::PooledIRCompiler>(std::move(machine),
                                                                       state->objects);
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
    if (!engine_internal::ReportedErrors::deliver(err))
      log->error("JIT session: {}", llvm::toString(std::move(err)));
  });
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

CompiledModule::CompiledModule() = default;
CompiledModule::~CompiledModule() = default;
CompiledModule::CompiledModule(CompiledModule&&) noexcept = default;
CompiledModule& CompiledModule::operator=(CompiledModule&&) noexcept = default;

StringRef CompiledModule::name() const { return state_ ? StringRef(state_->name) : StringRef(); }

size_t CompiledModule::object_bytes() const {
  return state_ && state_->object ? state_->object->getBufferSize() : 0;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() = default;

Error Engine::warm_up(ThreadSafeModule module) {
  if (!module) return jit_error("warm_up: the module is empty");
  return module.withModuleDo([&](llvm::Module& m) -> Error {
    auto object = impl_->jit->getIRCompileLayer().getCompiler()(m);
    if (!object)
      return llvm::joinErrors(
          jit_error("warm_up: cannot compile '" + m.getModuleIdentifier() + "'"),
          object.takeError());
    return Error::success();
  });
}

Expected<ModuleHandle> Engine::add_module(ThreadSafeModule module, StringRef name) {
  return impl_->add(std::move(module), name);
}

Expected<ModuleHandle> Engine::add_module(StringRef ir_text, StringRef name) {
  auto module = parse_module(ir_text, name);
  if (!module) return module.takeError();
  return impl_->add(std::move(*module), name);
}

Expected<LinkedModule> Engine::link_module(ThreadSafeModule module, StringRef name,
                                           CompiledModule* keep_if_out_of_memory, OwnerId owner) {
  LinkedModule linked;
  if (auto handle = impl_->add(std::move(module), name, &linked, keep_if_out_of_memory, owner);
      !handle)
    return handle.takeError();
  return linked;
}

Expected<LinkedModule> Engine::link_module(CompiledModule compiled,
                                           CompiledModule* keep_if_out_of_memory) {
  if (!compiled) return jit_error("link_module: the CompiledModule is empty");
  CompiledModule::State& kept = *compiled.state_;
  uint64_t token = 0;
  if (keep_if_out_of_memory != nullptr) {
    token = impl_->objects.expect();
    impl_->objects.put(token, llvm::MemoryBuffer::getMemBufferCopy(
                                  kept.object->getBuffer(), kept.object->getBufferIdentifier()));
  }
  LinkedModule linked;
  auto handle = impl_->link(kept.name, kept.owner, std::move(kept.definitions),
                            std::move(kept.ir_names), &linked, keep_if_out_of_memory, token,
                            [&](const llvm::orc::ResourceTrackerSP& tracker) {
                              return impl_->jit->addObjectFile(tracker, std::move(kept.object));
                            });
  if (!handle) return handle.takeError();
  return linked;
}

Error Engine::remove_module(ModuleHandle handle) { return impl_->remove(handle); }

const llvm::Triple& Engine::target_triple() const { return impl_->jit->getTargetTriple(); }

const llvm::DataLayout& Engine::data_layout() const { return impl_->jit->getDataLayout(); }

size_t Engine::live_modules() const {
  std::lock_guard<std::mutex> lock(impl_->modules_mutex);
  return impl_->modules.size();
}

Expected<ExecutorAddr> Engine::lookup(StringRef name) { return impl_->lookup(name); }

Error Engine::define_host_symbols(const llvm::StringMap<ExecutorAddr>& symbols) {
  llvm::orc::SymbolMap definitions;
  for (const auto& entry : symbols) {
    definitions[impl_->jit->mangleAndIntern(entry.getKey())] =
        llvm::orc::ExecutorSymbolDef(entry.getValue(), llvm::JITSymbolFlags::Exported);
  }
  return impl_->main().define(llvm::orc::absoluteSymbols(std::move(definitions)));
}

Expected<ExecutorAddr> Engine::define_function(StringRef name, ThreadSafeModule module) {
  Impl& impl = *impl_;
  auto context = [&] { return jit_error("cannot define function '" + name + "'"); };
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
      return llvm::joinErrors(context(), jit_error("'" + name +
                                                   "' is already defined by a module or as a "
                                                   "host symbol, so it cannot become redefinable"));
  }

  const std::string body_name = llvm::formatv("{0}.v{1}", name, impl.next_version++).str();
  if (Error err =
          module.withModuleDo([&](llvm::Module& m) { return make_body(m, name, body_name); }))
    return llvm::joinErrors(context(), std::move(err));
  auto body_module = impl.add(std::move(module), body_name);
  if (!body_module) return body_module.takeError();
  auto body = impl.lookup(body_name);
  if (!body) return llvm::joinErrors(body.takeError(), impl.remove(*body_module));

  if (existing != impl.cells.end()) {
    Impl::Cell& cell = existing->second;
    cell.cell->set_target(*body);
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
    return llvm::joinErrors(llvm::joinErrors(context(), std::move(err)), impl.remove(*body_module));
  const ExecutorAddr stub = (*cell)->address();
  impl.cells[name] = Impl::Cell{std::move(*cell), *body_module};
  impl.log->debug("defined '{}' as {} behind entry cell {:#x}", name.str(), body_name,
                  stub.getValue());
  return stub;
}

Expected<ExecutorAddr> Engine::define_function(StringRef name, StringRef ir_text) {
  auto module = parse_module(ir_text, name);
  if (!module) return module.takeError();
  return define_function(name, std::move(*module));
}

}  // namespace codeheap::jit
