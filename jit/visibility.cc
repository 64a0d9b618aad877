#include "jit/visibility.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>

#include "codeheap/log.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/BinaryFormat/ELF.h"
#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/Orc/TargetProcess/JITLoaderGDB.h"
#include "llvm/Object/ELF.h"
#include "llvm/Object/Binary.h"
#include "llvm/Object/ObjectFile.h"
#include "llvm/Object/SymbolSize.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

// Defined once per process, by libLLVM (Orc/TargetProcess/JITLoaderGDB.cpp); gdb finds the
// descriptor by name and breaks in the function. Defining our own copies would give the
// process two descriptors and gdb would only ever see one of them.
//
// The descriptor is declared weak only to make the compiler reach it through the GOT: a plain
// extern reference compiled into a PIE executable becomes a copy relocation, a zeroed copy in
// the executable's .bss until the dynamic linker fills it, and gdb attached before main
// complains "Unsupported JIT protocol version 0 in descriptor". libLLVM always provides it.
extern "C" __attribute__((weak)) jit_descriptor __jit_debug_descriptor;
extern "C" void __jit_debug_register_code();

namespace codeheap::jit {
namespace {

// ---------------------------------------------------------------------------------------------
// Perf map

// One line "START SIZE name" per function, hex without 0x, as perf(1) reads /tmp/perf-PID.map.
void append_perf_line(std::string& lines, uint64_t address, uint64_t size, llvm::StringRef name) {
  std::string clean = name.str();
  for (char& c : clean)
    if (c == '\n' || c == '\r') c = ' ';  // a line break would split the record
  lines += llvm::formatv("{0:x-} {1:x-} {2}\n", address, size, clean).str();
}

// The process's perf map file. It is opened for each batch (one object's functions) rather than
// kept open, so a fork child writes its own /tmp/perf-<its pid>.map and a file removed by the
// user is simply recreated; an object costs one open/write/close, small next to compiling it.
class PerfMap {
 public:
  static PerfMap& instance() {
    static auto* map = new PerfMap;  // never destroyed: JIT code may be emitted during exit
    return *map;
  }

  // Creates the file if needed; fails with the errno text if it cannot be opened.
  llvm::Error check() {
    std::lock_guard<std::mutex> lock(mutex_);
    int fd = open();
    if (fd < 0)
      return llvm::createStringError(std::error_code(errno, std::generic_category()),
                                     "cannot open perf map %s: %s", path().c_str(),
                                     std::strerror(errno));
    ::close(fd);
    return llvm::Error::success();
  }

  // One write per batch, under a lock, so the lines of concurrent objects never interleave.
  void append(const std::string& lines) {
    if (lines.empty()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    int fd = open();
    bool ok = fd >= 0;
    for (size_t done = 0; ok && done < lines.size();) {
      ssize_t n = ::write(fd, lines.data() + done, lines.size() - done);
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) done += static_cast<size_t>(n);
    }
    if (!ok) logger("jit")->warn("perf map {}: {}", path(), std::strerror(errno));
    if (fd >= 0) ::close(fd);
  }

 private:
  static std::string path() { return "/tmp/perf-" + std::to_string(::getpid()) + ".map"; }
  static int open() {
    return ::open(path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }

  std::mutex mutex_;
};

// ---------------------------------------------------------------------------------------------
// GDB JIT interface

// Serializes every change this library makes to __jit_debug_descriptor (JITLink plugin and
// RuntimeDyld listener alike). Writers outside this library (LLVM's own GDB listener, which
// MCJIT installs by default; JITLoaderGDB) use locks of their own: see visibility_listeners.
std::mutex& gdb_mutex() {
  static auto* mutex = new std::mutex;  // never destroyed, usable during static destruction
  return *mutex;
}

// Call with gdb_mutex() held. Same protocol as gdb's jit.h: link, say what changed, then stop
// in __jit_debug_register_code where an attached debugger has its breakpoint.
void gdb_register(jit_code_entry& entry) {
  jit_descriptor& descriptor = __jit_debug_descriptor;
  entry.prev_entry = nullptr;
  entry.next_entry = descriptor.first_entry;
  if (entry.next_entry) entry.next_entry->prev_entry = &entry;
  descriptor.first_entry = &entry;
  descriptor.relevant_entry = &entry;
  descriptor.action_flag = JIT_REGISTER_FN;
  __jit_debug_register_code();
}

void gdb_unregister(jit_code_entry& entry) {
  jit_descriptor& descriptor = __jit_debug_descriptor;
  if (entry.prev_entry)
    entry.prev_entry->next_entry = entry.next_entry;
  else
    descriptor.first_entry = entry.next_entry;
  if (entry.next_entry) entry.next_entry->prev_entry = entry.prev_entry;
  descriptor.relevant_entry = &entry;
  descriptor.action_flag = JIT_UNREGISTER_FN;
  __jit_debug_register_code();
  // The caller frees the entry next; leave no pointer to it behind.
  descriptor.relevant_entry = nullptr;
  descriptor.action_flag = JIT_NOACTION;
}

// ---------------------------------------------------------------------------------------------
// RuntimeDyld listeners

// Registers RuntimeDyld's debug object (a copy of the object whose section headers carry the
// load addresses, which RtdyldMemoryManager has remapped to the execution view) and unlinks it
// in notifyFreeingObject. LLVM's own listener (createGDBRegistrationListener) would do the same
// but under a lock of its own, racing the JITLink plugin on the shared descriptor; and since
// MCJIT already installs LLVM's listener in its constructor, forwarding to it would register
// each object twice under one key, which LLVM 19 (assertions off) answers by overwriting its
// map entry, leaving the first jit_code_entry linked over a freed buffer.
class GdbListener : public llvm::JITEventListener {
 public:
  // Never destroyed: engines destroyed during static destruction still notify it.
  static GdbListener& instance() {
    static auto* listener = new GdbListener;
    return *listener;
  }

  void notifyObjectLoaded(ObjectKey key, const llvm::object::ObjectFile& object,
                          const llvm::RuntimeDyld::LoadedObjectInfo& info) override {
    auto registration = std::make_unique<Registration>();
    registration->object = info.getObjectForDebug(object);
    const llvm::object::ObjectFile* debug = registration->object.getBinary();
    if (!debug) return;  // no debug-object support for this format
    registration->entry.symfile_addr = debug->getData().data();
    registration->entry.symfile_size = debug->getData().size();

    std::lock_guard<std::mutex> lock(mutex_);
    std::unique_ptr<Registration>& slot = objects_[key];
    std::lock_guard<std::mutex> gdb_lock(gdb_mutex());
    if (slot) gdb_unregister(slot->entry);  // the key's previous object was never freed
    gdb_register(registration->entry);
    slot = std::move(registration);
  }

  void notifyFreeingObject(ObjectKey key) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = objects_.find(key);
    if (it == objects_.end()) return;
    {
      std::lock_guard<std::mutex> gdb_lock(gdb_mutex());
      gdb_unregister(it->second->entry);
    }
    objects_.erase(it);
  }

 private:
  struct Registration {
    llvm::object::OwningBinary<llvm::object::ObjectFile> object;
    jit_code_entry entry{};
  };

  std::mutex mutex_;  // guards objects_; taken before gdb_mutex()
  std::map<ObjectKey, std::unique_ptr<Registration>> objects_;
};

// Perf map lines for RuntimeDyld objects, from the ELF symbol sizes and the sections' load
// addresses (which RtdyldMemoryManager has already remapped to the execution view).
class PerfMapListener : public llvm::JITEventListener {
 public:
  static PerfMapListener& instance() {
    static auto* listener = new PerfMapListener;  // never destroyed, like GdbListener
    return *listener;
  }

  void notifyObjectLoaded(ObjectKey, const llvm::object::ObjectFile& object,
                          const llvm::RuntimeDyld::LoadedObjectInfo& info) override {
    std::string lines;
    for (const auto& [symbol, size] : llvm::object::computeSymbolSizes(object)) {
      auto type = symbol.getType();
      auto name = symbol.getName();
      auto address = symbol.getAddress();
      auto section = symbol.getSection();
      if (!type || !name || !address || !section) {
        llvm::consumeError(type.takeError());
        llvm::consumeError(name.takeError());
        llvm::consumeError(address.takeError());
        llvm::consumeError(section.takeError());
        continue;
      }
      if (*type != llvm::object::SymbolRef::ST_Function || size == 0 ||
          *section == object.section_end())
        continue;
      uint64_t load = info.getSectionLoadAddress(**section);
      if (load == 0) continue;  // section not loaded
      append_perf_line(lines, load + (*address - (*section)->getAddress()), size, *name);
    }
    PerfMap::instance().append(lines);
  }
  // Nothing on notifyFreeingObject: the perf map is append-only (see visibility.h).
};

// ---------------------------------------------------------------------------------------------
// JITLink plugins

// Collects the defined, named, callable symbols once their addresses are final (after fixups)
// and writes them when the object is emitted, so a failed link leaves no lines behind.
class PerfMapPlugin : public llvm::orc::ObjectLinkingLayer::Plugin {
 public:
  void modifyPassConfig(llvm::orc::MaterializationResponsibility& mr, llvm::jitlink::LinkGraph&,
                        llvm::jitlink::PassConfiguration& config) override {
    config.PostFixupPasses.push_back([this, &mr](llvm::jitlink::LinkGraph& graph) {
      std::string lines;
      for (llvm::jitlink::Symbol* symbol : graph.defined_symbols())
        if (symbol->isCallable() && symbol->hasName() && symbol->getSize() > 0)
          append_perf_line(lines, symbol->getAddress().getValue(), symbol->getSize(),
                           symbol->getName());
      std::lock_guard<std::mutex> lock(mutex_);
      pending_[&mr] = std::move(lines);
      return llvm::Error::success();
    });
  }

  llvm::Error notifyEmitted(llvm::orc::MaterializationResponsibility& mr) override {
    std::string lines;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = pending_.find(&mr);
      if (it == pending_.end()) return llvm::Error::success();
      lines = std::move(it->second);
      pending_.erase(it);
    }
    PerfMap::instance().append(lines);
    return llvm::Error::success();
  }

  llvm::Error notifyFailed(llvm::orc::MaterializationResponsibility& mr) override {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.erase(&mr);
    return llvm::Error::success();
  }

  // Append-only: retired code keeps its lines; a later function at the same address gets a
  // newer line, and perf resolves by the latest.
  llvm::Error notifyRemovingResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey) override {
    return llvm::Error::success();
  }
  void notifyTransferringResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey,
                                   llvm::orc::ResourceKey) override {}

 private:
  std::mutex mutex_;
  std::map<llvm::orc::MaterializationResponsibility*, std::string> pending_;
};

// Registers each linked ELF object with the GDB JIT interface and unregisters it when its
// resource tracker is removed. LLVM 19's DebugObjectManagerPlugin is not used: its
// notifyRemovingResources frees the debug object but leaves the jit_code_entry linked in
// __jit_debug_descriptor ("TODO: Implement unregister notifications"; JITLoaderGDB.cpp has no
// unregister action), so gdb would read freed memory after every retired module. Here the
// debug object is a private copy of the relocatable object whose section headers get the
// final load addresses (sh_addr); gdb relocates its symbols and DWARF from those, exactly as
// for RuntimeDyld's debug objects.
class GdbJitPlugin : public llvm::orc::ObjectLinkingLayer::Plugin {
 public:
  ~GdbJitPlugin() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [key, objects] : registered_) unregister_all(objects);
  }

  void notifyMaterializing(llvm::orc::MaterializationResponsibility& mr,
                           llvm::jitlink::LinkGraph& graph, llvm::jitlink::JITLinkContext&,
                           llvm::MemoryBufferRef input) override {
    const llvm::Triple& triple = graph.getTargetTriple();
    if (!triple.isOSBinFormatELF() || !triple.isArch64Bit() || !triple.isLittleEndian()) return;
    auto object = std::make_unique<DebugObject>();
    if (llvm::Error err = object->load(input)) {
      logger("jit")->warn("gdb jit: '{}' not registered: {}", graph.getName(),
                          llvm::toString(std::move(err)));
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    pending_[&mr] = std::move(object);
  }

  void modifyPassConfig(llvm::orc::MaterializationResponsibility& mr, llvm::jitlink::LinkGraph&,
                        llvm::jitlink::PassConfiguration& config) override {
    DebugObject* object = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = pending_.find(&mr);
      if (it == pending_.end()) return;
      object = it->second.get();
    }
    config.PostAllocationPasses.push_back([object](llvm::jitlink::LinkGraph& graph) {
      object->set_load_addresses(graph);
      return llvm::Error::success();
    });
  }

  llvm::Error notifyEmitted(llvm::orc::MaterializationResponsibility& mr) override {
    std::unique_ptr<DebugObject> object;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = pending_.find(&mr);
      if (it == pending_.end()) return llvm::Error::success();
      object = std::move(it->second);
      pending_.erase(it);
    }
    {
      std::lock_guard<std::mutex> lock(gdb_mutex());
      gdb_register(object->entry);
    }
    llvm::Error err = mr.withResourceKeyDo([&](llvm::orc::ResourceKey key) {
      std::lock_guard<std::mutex> lock(mutex_);
      registered_[key].push_back(std::move(object));
    });
    if (object) {  // the tracker was removed meanwhile: nothing will ever unregister it
      std::lock_guard<std::mutex> lock(gdb_mutex());
      gdb_unregister(object->entry);
    }
    return err;
  }

  llvm::Error notifyFailed(llvm::orc::MaterializationResponsibility& mr) override {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.erase(&mr);
    return llvm::Error::success();
  }

  llvm::Error notifyRemovingResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey key) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = registered_.find(key);
    if (it == registered_.end()) return llvm::Error::success();
    unregister_all(it->second);
    registered_.erase(it);
    return llvm::Error::success();
  }

  void notifyTransferringResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey destination,
                                   llvm::orc::ResourceKey source) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = registered_.find(source);
    if (it == registered_.end()) return;
    auto& to = registered_[destination];
    for (auto& object : it->second) to.push_back(std::move(object));
    registered_.erase(source);
  }

 private:
  using ELF = llvm::object::ELF64LE;

  struct DebugObject {
    std::unique_ptr<llvm::WritableMemoryBuffer> image;
    // Allocated sections of `image` by name (names can repeat, e.g. with -function-sections
    // and -unique-section-names=false); their sh_addr is patched in place.
    llvm::StringMap<llvm::SmallVector<ELF::Shdr*, 1>> sections;
    jit_code_entry entry{};

    llvm::Error load(llvm::MemoryBufferRef input) {
      image = llvm::WritableMemoryBuffer::getNewUninitMemBuffer(input.getBufferSize(),
                                                                input.getBufferIdentifier());
      if (!image) return llvm::createStringError(std::errc::not_enough_memory, "no memory");
      std::memcpy(image->getBufferStart(), input.getBufferStart(), input.getBufferSize());
      auto file = llvm::object::ELFFile<ELF>::create(
          llvm::StringRef(image->getBufferStart(), image->getBufferSize()));
      if (!file) return file.takeError();
      auto headers = file->sections();
      if (!headers) return headers.takeError();
      for (const ELF::Shdr& header : *headers) {
        if (!(header.sh_flags & llvm::ELF::SHF_ALLOC)) continue;
        auto name = file->getSectionName(header);
        if (!name) return name.takeError();
        // The headers live inside `image`, which this object owns and may modify.
        sections[*name].push_back(const_cast<ELF::Shdr*>(&header));
      }
      entry.symfile_addr = image->getBufferStart();
      entry.symfile_size = image->getBufferSize();
      return llvm::Error::success();
    }

    // JITLink keeps ELF section names for its graph sections; a section's range starts at its
    // lowest block, which is where the section landed.
    void set_load_addresses(llvm::jitlink::LinkGraph& graph) {
      for (llvm::jitlink::Section& section : graph.sections()) {
        llvm::jitlink::SectionRange range(section);
        auto it = sections.find(section.getName());
        if (range.empty() || it == sections.end()) continue;
        for (ELF::Shdr* header : it->second) header->sh_addr = range.getStart().getValue();
      }
    }
  };

  static void unregister_all(std::vector<std::unique_ptr<DebugObject>>& objects) {
    std::lock_guard<std::mutex> lock(gdb_mutex());
    for (auto& object : objects) gdb_unregister(object->entry);
  }

  std::mutex mutex_;  // guards pending_ and registered_; taken before gdb_mutex()
  std::map<llvm::orc::MaterializationResponsibility*, std::unique_ptr<DebugObject>> pending_;
  llvm::DenseMap<llvm::orc::ResourceKey, std::vector<std::unique_ptr<DebugObject>>> registered_;
};

}  // namespace

llvm::Error add_visibility_plugins(llvm::orc::ObjectLinkingLayer& layer,
                                   llvm::orc::ExecutionSession& session,
                                   const VisibilityOptions& options) {
  if (options.perf_map) {
    if (llvm::Error err = PerfMap::instance().check()) return err;
    layer.addPlugin(std::make_shared<PerfMapPlugin>());
  }
  if (options.gdb_jit) {
    const llvm::Triple& triple = session.getTargetTriple();
    if (!triple.isOSBinFormatELF() || !triple.isArch64Bit() || !triple.isLittleEndian())
      return llvm::createStringError(std::errc::not_supported,
                                     "GDB JIT registration supports 64-bit little-endian ELF "
                                     "targets only, not %s",
                                     triple.str().c_str());
    layer.addPlugin(std::make_shared<GdbJitPlugin>());
  }
  return llvm::Error::success();
}

std::vector<llvm::JITEventListener*> visibility_listeners(const VisibilityOptions& options) {
  std::vector<llvm::JITEventListener*> listeners;
  if (options.perf_map) listeners.push_back(&PerfMapListener::instance());
  if (options.gdb_jit) listeners.push_back(&GdbListener::instance());
  return listeners;
}

}  // namespace codeheap::jit
