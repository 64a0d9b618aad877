// Debugger and profiler visibility of JIT code: the perf map and the GDB JIT interface.
//
// Both are opt-in, per engine, through VisibilityOptions (jit/options.h; usually taken from the
// environment),
// and both describe code by its execution address (the low read-execute view, never the
// writable alias). Both assume in-process execution (the ORC executor is this process).
//
// Perf map: `/tmp/perf-<pid>.map` gets one line "START SIZE name" (hex, no 0x, as perf(1)
// reads it) for every named function of an object once the object is emitted. The format is
// append-only: nothing is written when code is retired; when an address range is reused, the
// new function simply gets a new line and perf resolves a sample by the latest line covering
// it. The file is never truncated by this library; delete it between runs if you like.
//
// GDB JIT interface: each object is registered in the process's single
// `__jit_debug_descriptor` (the one libLLVM defines; this library defines no second one) as an
// in-memory ELF whose section headers carry the load addresses, and gdb is notified through
// `__jit_debug_register_code`, so gdb shows JIT frames by name (and with source lines when the
// IR has debug info). Registration is undone, with a JIT_UNREGISTER_FN notification:
//   - ORC/JITLink: when the ResourceTracker owning the code is removed (or the layer dies);
//   - MCJIT/RuntimeDyld: on JITEventListener::notifyFreeingObject, i.e. when the
//     ExecutionEngine is destroyed / RTDyldObjectLinkingLayer removes the object.
// All of this library's registrations go through one lock.
#pragma once

#include <vector>

#include "jit/options.h"
#include "llvm/ExecutionEngine/JITEventListener.h"
#include "llvm/ExecutionEngine/Orc/Core.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
#include "llvm/Support/Error.h"

namespace codeheap::jit {

// Adds the perf-map and GDB-JIT plugins selected by `options` to an ORC object linking layer
// (eh_frame registration is the engine's job). Everything registered is deregistered when the
// owning resource tracker is removed. Fails if the perf map file cannot be opened or the
// target is not an ELF target the GDB JIT support handles.
llvm::Error add_visibility_plugins(llvm::orc::ObjectLinkingLayer& layer,
                                   llvm::orc::ExecutionSession& session,
                                   const VisibilityOptions& options);

// JITEventListeners for MCJIT / RTDyldObjectLinkingLayer users. The listeners are
// process-wide singletons that live until exit (not owned by the caller, never delete them);
// register each with ExecutionEngine::RegisterJITEventListener or
// RTDyldObjectLinkingLayer::registerJITEventListener. Empty when both options are off.
//
// MCJIT registers LLVM's own GDB listener (JITEventListener::createGDBRegistrationListener())
// in its constructor, whatever the options say. Unregister it before registering these
//   engine->UnregisterJITEventListener(llvm::JITEventListener::createGDBRegistrationListener());
// so that gdb_jit=false really means off, gdb does not see every object twice, and no
// registration bypasses this library's lock (LLVM's listener has a lock of its own).
std::vector<llvm::JITEventListener*> visibility_listeners(const VisibilityOptions& options);

}  // namespace codeheap::jit
