// Perf map and GDB JIT interface, for JITLink (ObjectLinkingLayer plugins) and for MCJIT
// (JITEventListeners), including deregistration when the code is retired.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "jit/visibility.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
#include "llvm/ExecutionEngine/Orc/TargetProcess/JITLoaderGDB.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/Object/ObjectFile.h"
#include "tests/jit/mcjit_support.h"

// The process's one GDB JIT descriptor, defined by libLLVM.
extern "C" jit_descriptor __jit_debug_descriptor;

namespace codeheap::jit {
namespace {

using testing::error_text;
using testing::make_heap;
using testing::make_mcjit;
using testing::make_rtdyld_lljit;
using testing::parse_module;

struct PerfLine {
  uint64_t address = 0;
  uint64_t size = 0;
};

std::string perf_map_path() { return "/tmp/perf-" + std::to_string(getpid()) + ".map"; }

// Removes this process's perf map when a test is done with it, so test runs leave no files in
// /tmp (the writer recreates the file for whoever appends next).
struct RemovePerfMapAtEnd {
  ~RemovePerfMapAtEnd() { std::remove(perf_map_path().c_str()); }
};

// The latest line for each name, as perf would resolve it.
std::map<std::string, PerfLine> read_perf_map() {
  std::map<std::string, PerfLine> lines;
  std::ifstream file(perf_map_path());
  std::string line;
  while (std::getline(file, line)) {
    std::istringstream fields(line);
    PerfLine entry;
    std::string name;
    fields >> std::hex >> entry.address >> entry.size >> name;
    if (fields) lines[name] = entry;
  }
  return lines;
}

// Entries of the GDB descriptor, and the symbol addresses their symfiles give to `name`, as
// gdb computes them: the symbol's offset in its section plus the section's sh_addr.
struct GdbView {
  int entries = 0;
  std::vector<uint64_t> addresses_of_name;
};

GdbView read_gdb_descriptor(llvm::StringRef name) {
  GdbView view;
  for (jit_code_entry* entry = __jit_debug_descriptor.first_entry; entry;
       entry = entry->next_entry) {
    ++view.entries;
    llvm::MemoryBufferRef buffer(llvm::StringRef(entry->symfile_addr, entry->symfile_size), "gdb");
    auto object = llvm::object::ObjectFile::createObjectFile(buffer);
    if (!object) {
      ADD_FAILURE() << llvm::toString(object.takeError());
      continue;
    }
    for (const auto& symbol : (*object)->symbols()) {
      auto symbol_name = symbol.getName();
      auto value = symbol.getValue();
      auto section = symbol.getSection();
      if (!symbol_name || !value || !section || *section == (*object)->section_end() ||
          *symbol_name != name) {
        llvm::consumeError(symbol_name.takeError());
        llvm::consumeError(value.takeError());
        llvm::consumeError(section.takeError());
        continue;
      }
      view.addresses_of_name.push_back((*section)->getAddress() + *value);
    }
  }
  return view;
}

TEST(VisibilityTest, OptionsFromEnvironmentAcceptExactlyOne) {
  auto with = [](const char* perf, const char* gdb) {
    perf ? setenv("CODEHEAP_PERF_MAP", perf, 1) : unsetenv("CODEHEAP_PERF_MAP");
    gdb ? setenv("CODEHEAP_GDB_JIT", gdb, 1) : unsetenv("CODEHEAP_GDB_JIT");
    VisibilityOptions options = VisibilityOptions::from_environment();
    unsetenv("CODEHEAP_PERF_MAP");
    unsetenv("CODEHEAP_GDB_JIT");
    return std::make_pair(options.perf_map, options.gdb_jit);
  };
  EXPECT_EQ(with(nullptr, nullptr), std::make_pair(false, false));
  EXPECT_EQ(with("1", nullptr), std::make_pair(true, false));
  EXPECT_EQ(with(nullptr, "1"), std::make_pair(false, true));
  EXPECT_EQ(with("1", "1"), std::make_pair(true, true));
  EXPECT_EQ(with("0", "yes"), std::make_pair(false, false));
  EXPECT_EQ(with("", "true"), std::make_pair(false, false));
  EXPECT_TRUE(visibility_listeners({}).empty());
}

// A minimal LLJIT whose ObjectLinkingLayer carries the visibility plugins.
std::unique_ptr<llvm::orc::LLJIT> make_lljit(const VisibilityOptions& options) {
  testing::init_native_target();
  auto jit =
      llvm::orc::LLJITBuilder()
          .setObjectLinkingLayerCreator(
              [&](llvm::orc::ExecutionSession& session,
                  const llvm::Triple&) -> llvm::Expected<std::unique_ptr<llvm::orc::ObjectLayer>> {
                auto layer = std::make_unique<llvm::orc::ObjectLinkingLayer>(session);
                if (llvm::Error err = add_visibility_plugins(*layer, session, options)) return err;
                return layer;
              })
          // No platform: its support modules would be linked (and registered) too.
          .setPlatformSetUp(llvm::orc::setUpInactivePlatform)
          .create();
  if (!jit) {
    ADD_FAILURE() << llvm::toString(jit.takeError());
    return nullptr;
  }
  return std::move(*jit);
}

constexpr const char* kJitLinkIR = R"IR(
define i64 @vis_jitlink_square(i64 %x) {
  %r = mul i64 %x, %x
  ret i64 %r
}
define i64 @vis_jitlink_twice(i64 %x) {
  %s = call i64 @vis_jitlink_square(i64 %x)
  %r = add i64 %s, %s
  ret i64 %r
}
)IR";

TEST(VisibilityTest, PerfMapNamesJitLinkFunctions) {
  RemovePerfMapAtEnd remove_perf_map;
  VisibilityOptions options;
  options.perf_map = true;
  auto jit = make_lljit(options);
  ASSERT_TRUE(jit);
  ASSERT_EQ(error_text(jit->addIRModule(parse_module(kJitLinkIR))), "");
  auto twice = jit->lookup("vis_jitlink_twice");
  ASSERT_TRUE(bool(twice)) << llvm::toString(twice.takeError());
  auto square = jit->lookup("vis_jitlink_square");
  ASSERT_TRUE(bool(square)) << llvm::toString(square.takeError());
  EXPECT_EQ(twice->toPtr<int64_t (*)(int64_t)>()(7), 98);

  auto lines = read_perf_map();
  for (auto [name, address] :
       {std::pair{"vis_jitlink_twice", *twice}, std::pair{"vis_jitlink_square", *square}}) {
    ASSERT_TRUE(lines.count(name)) << name;
    EXPECT_EQ(lines[name].address, address.getValue()) << name;
    EXPECT_GT(lines[name].size, 0u) << name;
    EXPECT_LT(lines[name].size, 256u) << name;
  }
}

constexpr const char* kMcjitIR = R"IR(
define i64 @vis_mcjit_inc(i64 %x) {
  %r = add i64 %x, 1
  ret i64 %r
}
define i64 @vis_mcjit_dec(i64 %x) {
  %r = sub i64 %x, 1
  ret i64 %r
}
)IR";

TEST(VisibilityTest, PerfMapNamesMcjitFunctionsAtTheirExecutionAddress) {
  RemovePerfMapAtEnd remove_perf_map;
  auto heap = make_heap("vis-perf");
  ASSERT_TRUE(heap);
  VisibilityOptions options;
  options.perf_map = true;
  auto listeners = visibility_listeners(options);
  ASSERT_EQ(listeners.size(), 1u);
  auto jit = make_mcjit(*heap, kMcjitIR, "vis-mcjit", [](RtdyldMemoryManager&) {}, listeners);
  ASSERT_TRUE(jit.engine);

  auto lines = read_perf_map();
  for (const char* name : {"vis_mcjit_inc", "vis_mcjit_dec"}) {
    uint64_t address = jit.engine->getFunctionAddress(name);
    ASSERT_NE(address, 0u) << name;
    ASSERT_TRUE(lines.count(name)) << name;
    EXPECT_EQ(lines[name].address, address) << name;  // the low view, not the writable alias
    EXPECT_EQ(heap->find(address)->arena, Arena::kCode) << name;
    EXPECT_GT(lines[name].size, 0u) << name;
    EXPECT_LT(lines[name].size, 256u) << name;
  }
}

constexpr const char* kGdbJitLinkIR = R"IR(
define i64 @vis_gdb_jitlink(i64 %x) {
  %r = add i64 %x, 42
  ret i64 %r
}
)IR";

TEST(VisibilityTest, GdbDescriptorGainsAndLosesJitLinkObjects) {
  VisibilityOptions options;
  options.gdb_jit = true;
  auto jit = make_lljit(options);
  ASSERT_TRUE(jit);
  const int before = read_gdb_descriptor("").entries;

  auto tracker = jit->getMainJITDylib().createResourceTracker();
  ASSERT_EQ(error_text(jit->addIRModule(tracker, parse_module(kGdbJitLinkIR))), "");
  auto function = jit->lookup("vis_gdb_jitlink");
  ASSERT_TRUE(bool(function)) << llvm::toString(function.takeError());
  EXPECT_EQ(function->toPtr<int64_t (*)(int64_t)>()(1), 43);

  GdbView registered = read_gdb_descriptor("vis_gdb_jitlink");
  EXPECT_EQ(registered.entries, before + 1);
  ASSERT_EQ(registered.addresses_of_name.size(), 1u);
  EXPECT_EQ(registered.addresses_of_name[0], function->getValue());
  EXPECT_EQ(__jit_debug_descriptor.action_flag, JIT_REGISTER_FN);

  ASSERT_EQ(error_text(tracker->remove()), "");
  GdbView removed = read_gdb_descriptor("vis_gdb_jitlink");
  EXPECT_EQ(removed.entries, before);
  EXPECT_TRUE(removed.addresses_of_name.empty());
}

TEST(VisibilityTest, GdbDescriptorGainsAndLosesMcjitObjects) {
  auto heap = make_heap("vis-gdb");
  ASSERT_TRUE(heap);
  VisibilityOptions options;
  options.gdb_jit = true;
  const int before = read_gdb_descriptor("").entries;
  {
    auto jit = make_mcjit(
        *heap, kMcjitIR, "vis-gdb-mcjit", [](RtdyldMemoryManager&) {},
        visibility_listeners(options));
    ASSERT_TRUE(jit.engine);
    GdbView registered = read_gdb_descriptor("vis_mcjit_dec");
    EXPECT_EQ(registered.entries, before + 1);
    ASSERT_EQ(registered.addresses_of_name.size(), 1u);
    // gdb sees the function where it runs (the remapped low address).
    EXPECT_EQ(registered.addresses_of_name[0], jit.engine->getFunctionAddress("vis_mcjit_dec"));
  }
  GdbView removed = read_gdb_descriptor("vis_mcjit_dec");
  EXPECT_EQ(removed.entries, before);
  EXPECT_TRUE(removed.addresses_of_name.empty());
}

// RTDyldObjectLinkingLayer with the listeners: registered when emitted, unregistered when the
// resource tracker is removed (the layer calls notifyFreeingObject for the object's manager).
TEST(VisibilityTest, RTDyldObjectLinkingLayerObjectsAreMappedAndUnregisteredOnRemoval) {
  RemovePerfMapAtEnd remove_perf_map;
  auto heap = make_heap("vis-rtdyld");
  ASSERT_TRUE(heap);
  VisibilityOptions options;
  options.perf_map = true;
  options.gdb_jit = true;
  auto jit =
      make_rtdyld_lljit(*heap, "vis-rtdyld", [&](llvm::orc::RTDyldObjectLinkingLayer& layer) {
        for (llvm::JITEventListener* listener : visibility_listeners(options))
          layer.registerJITEventListener(*listener);
      });
  ASSERT_TRUE(jit);
  const int before = read_gdb_descriptor("").entries;

  auto tracker = jit->getMainJITDylib().createResourceTracker();
  ASSERT_EQ(error_text(jit->addIRModule(tracker, parse_module(R"IR(
define i64 @vis_rtdyld_f(i64 %x) {
  %r = mul i64 %x, 5
  ret i64 %r
}
)IR"))),
            "");
  auto function = jit->lookup("vis_rtdyld_f");
  ASSERT_TRUE(bool(function)) << llvm::toString(function.takeError());
  EXPECT_EQ(function->toPtr<int64_t (*)(int64_t)>()(3), 15);

  auto lines = read_perf_map();
  ASSERT_TRUE(lines.count("vis_rtdyld_f"));
  EXPECT_EQ(lines["vis_rtdyld_f"].address, function->getValue());
  GdbView registered = read_gdb_descriptor("vis_rtdyld_f");
  EXPECT_EQ(registered.entries, before + 1);
  ASSERT_EQ(registered.addresses_of_name.size(), 1u);
  EXPECT_EQ(registered.addresses_of_name[0], function->getValue());

  ASSERT_EQ(error_text(tracker->remove()), "");
  GdbView removed = read_gdb_descriptor("vis_rtdyld_f");
  EXPECT_EQ(removed.entries, before);
  EXPECT_TRUE(removed.addresses_of_name.empty());
}

}  // namespace
}  // namespace codeheap::jit
