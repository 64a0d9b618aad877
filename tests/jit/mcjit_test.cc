// MCJIT on the code heap through RtdyldMemoryManager: Small code model, jump tables,
// pc-relative recursion, host calls, churn, C++ exceptions through JIT frames, heap errors.
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "jit/error.h"
#include "jit/rtdyld_memory_manager.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/RTDyldObjectLinkingLayer.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "tests/jit/ir_fixture_support.h"
#include "tests/jit/mcjit_support.h"
#include "tests/jit/process_maps.h"

namespace codeheap::jit {
namespace {

using testing::error_text;
using testing::make_heap;
using testing::make_mcjit;
using testing::make_rtdyld_lljit;
using testing::parse_module;

extern "C" int64_t codeheap_test_host_scale(int64_t x) { return 3 * x + 1; }

// Four closures over an array environment, a dispatcher whose dense switch becomes a jump
// table, a self-recursive fib and a call to a host function (codeheap_test_host_scale).
std::string closures_ir() { return testdata::ir("array_env_closures") + testdata::ir("fib"); }

int64_t reference_dispatch(int which, const int64_t* env, int64_t x) {
  switch (which) {
    case 0:
      return x + env[0];
    case 1:
      return x * env[1];
    case 2:
      return x - env[2];
    case 3:
      return x ^ env[3];
    case 4:
      return (x + 100) + env[0];
    case 5:
      return (x << 1) * env[1];
    case 6:
      return (-x) - env[2];
    case 7:
      return (x | 4096) ^ env[3];
    default:
      return -1;
  }
}

int64_t reference_fib(int64_t n) { return n < 2 ? n : reference_fib(n - 1) + reference_fib(n - 2); }

constexpr uintptr_t kLow = uintptr_t{1} << 31;

TEST(McjitTest, SmallCodeModelClosuresJumpTableRecursionAndHostCall) {
  auto heap = make_heap("mcjit-small");
  ASSERT_TRUE(heap);
  auto jit = make_mcjit(*heap, closures_ir(), "closures", [](RtdyldMemoryManager& manager) {
    manager.define_symbol("codeheap_test_host_scale",
                          reinterpret_cast<uint64_t>(&codeheap_test_host_scale));
  });
  ASSERT_TRUE(jit.engine);
  ASSERT_EQ(error_text(jit.manager->status()), "");

  // Results.
  using Closure = int64_t (*)(const int64_t*, int64_t);
  using Dispatch = int64_t (*)(int32_t, const int64_t*, int64_t);
  const int64_t env[4] = {11, 7, 5, 0x55};
  for (const char* name : {"add_env", "mul_env", "sub_env", "xor_env"})
    ASSERT_NE(jit.function<Closure>(name), nullptr) << name;
  EXPECT_EQ(jit.function<Closure>("add_env")(env, 4), 15);
  EXPECT_EQ(jit.function<Closure>("mul_env")(env, 4), 28);
  EXPECT_EQ(jit.function<Closure>("sub_env")(env, 4), -1);
  EXPECT_EQ(jit.function<Closure>("xor_env")(env, 4), 4 ^ 0x55);
  auto dispatch = jit.function<Dispatch>("dispatch");
  ASSERT_NE(dispatch, nullptr);
  for (int which = -1; which <= 9; ++which)
    for (int64_t x : {0, 3, -17, 123456})
      EXPECT_EQ(dispatch(which, env, x), reference_dispatch(which, env, x)) << which << " " << x;
  auto fib = jit.function<int64_t (*)(int64_t)>("fib");
  ASSERT_NE(fib, nullptr);
  EXPECT_EQ(fib(20), reference_fib(20));
  auto call_host = jit.function<int64_t (*)(int64_t)>("call_host");
  ASSERT_NE(call_host, nullptr);
  EXPECT_EQ(call_host(5), codeheap_test_host_scale(6) + 7);

  // Every section and every function is low, inside a live heap block of the right arena,
  // owned by this object's owner.
  std::optional<OwnerId> owner;
  bool saw_rodata = false;
  for (const auto& section : jit.manager->sections()) {
    SCOPED_TRACE(section.name);
    EXPECT_LE(section.address + section.size, kLow);
    auto block = heap->find(section.address);
    ASSERT_TRUE(block);
    EXPECT_EQ(block->state, BlockState::kLive);
    EXPECT_EQ(block->arena, section.arena);
    EXPECT_LE(section.address + section.size, block->address + block->size);
    if (!owner) owner = block->owner;
    EXPECT_EQ(block->owner, *owner);
    saw_rodata |= section.name == ".rodata";
  }
  EXPECT_TRUE(saw_rodata) << "the switch did not produce a jump table in .rodata";
  for (const char* name :
       {"add_env", "mul_env", "sub_env", "xor_env", "dispatch", "fib", "call_host"}) {
    uintptr_t address = jit.engine->getFunctionAddress(name);
    EXPECT_LT(address, kLow) << name;
    auto block = heap->find(address);
    ASSERT_TRUE(block) << name;
    EXPECT_EQ(block->arena, Arena::kCode) << name;
  }
  bool owner_named = false;
  for (const auto& stats : heap->stats().owners) owner_named |= stats.name == "closures";
  EXPECT_TRUE(owner_named);

  // The jump table: 64-bit entries in .rodata that point into dispatch, one per case.
  uintptr_t dispatch_address = jit.engine->getFunctionAddress("dispatch");
  int entries_into_dispatch = 0;
  for (const auto& section : jit.manager->sections()) {
    if (section.name != ".rodata") continue;
    for (size_t offset = 0; offset + 8 <= section.size; offset += 8) {
      uint64_t entry;
      std::memcpy(&entry, reinterpret_cast<const void*>(section.address + offset), 8);
      entries_into_dispatch += entry > dispatch_address && entry < dispatch_address + 512;
    }
  }
  EXPECT_GE(entries_into_dispatch, 8);

  // fib calls itself with a direct pc-relative call (E8 rel32 -> fib), not movabs + call *reg.
  uintptr_t fib_address = jit.engine->getFunctionAddress("fib");
  auto* code = reinterpret_cast<const uint8_t*>(fib_address);
  int self_calls = 0;
  for (size_t i = 0; i < 96; ++i) {
    if (code[i] != 0xE8) continue;
    int32_t rel;
    std::memcpy(&rel, code + i + 1, 4);
    self_calls += fib_address + i + 5 + rel == fib_address;
  }
  EXPECT_EQ(self_calls, 2);
}

size_t maps_lines() { return process_maps::count(); }

size_t live_owners(const HeapStats& stats) {
  size_t live = 0;
  for (const auto& owner : stats.owners) live += !owner.retired;
  return live;
}

constexpr const char* kChurnIR = R"IR(
define i64 @churn(i64 %x) {
  %a = mul i64 %x, 3
  %b = add i64 %a, 2
  ret i64 %b
}
@table = constant [4 x i64] [i64 1, i64 2, i64 3, i64 4]
define i64 @lookup(i64 %i) {
  %p = getelementptr [4 x i64], ptr @table, i64 0, i64 %i
  %v = load i64, ptr %p
  ret i64 %v
}
)IR";

TEST(McjitTest, ThousandEnginesReturnEverything) {
  HeapOptions options;
  options.code_bytes = size_t{16} << 20;
  options.read_only_bytes = size_t{8} << 20;
  options.data_bytes = size_t{8} << 20;
  options.retain_free_bytes = 0;  // reclaim decommits every whole free page: exact baseline
  options.name = "mcjit-churn";
  auto heap = make_heap(options);
  ASSERT_TRUE(heap);
  auto nothing_on_stack = [](uintptr_t, uintptr_t) { return false; };
  auto cycle = [&](int i) {
    auto jit = make_mcjit(*heap, kChurnIR, "churn-" + std::to_string(i));
    ASSERT_TRUE(jit.engine);
    ASSERT_EQ(jit.function<int64_t (*)(int64_t)>("churn")(i), 3 * i + 2);
    ASSERT_EQ(jit.function<int64_t (*)(int64_t)>("lookup")(i % 4), i % 4 + 1);
  };

  // Warm up (first use of the arenas, LLVM's own one-time allocations), then take the baseline.
  for (int i = 0; i < 50; ++i) cycle(i);
  heap->reclaim(nothing_on_stack);
  const HeapStats baseline = heap->stats();
  const size_t baseline_maps = maps_lines();
  EXPECT_EQ(baseline.used_bytes, 0u);
  EXPECT_GT(baseline.counters.allocations, 0u);

  for (int i = 0; i < 1000; ++i) {
    cycle(i);
    if (HasFatalFailure()) return;
    if (i % 100 == 99) heap->reclaim(nothing_on_stack);
  }
  heap->reclaim(nothing_on_stack);
  const HeapStats after = heap->stats();
  EXPECT_EQ(after.used_bytes, 0u);
  EXPECT_EQ(after.quarantined_bytes, 0u);
  EXPECT_EQ(after.committed_bytes, baseline.committed_bytes);
  EXPECT_EQ(live_owners(after), live_owners(baseline));
  EXPECT_EQ(after.owners.size(), baseline.owners.size());
  EXPECT_GE(after.counters.allocations, baseline.counters.allocations + 1000);
  EXPECT_LE(maps_lines(), baseline_maps);
}

// One manager, two objects (MCJIT with a second module): each object gets its own owner and
// its own remapping, and code of the second object calls into the first.
TEST(McjitTest, EveryObjectOfAnEngineGetsItsOwnOwnerAndIsRemapped) {
  auto heap = make_heap("mcjit-two-objects");
  ASSERT_TRUE(heap);
  auto jit = make_mcjit(*heap, kChurnIR, "two");
  ASSERT_TRUE(jit.engine);
  llvm::SMDiagnostic diagnostic;
  auto second = llvm::parseAssemblyString(R"IR(
declare i64 @churn(i64)
define i64 @second(i64 %x) {
  %c = call i64 @churn(i64 %x)
  %r = add i64 %c, 1000
  ret i64 %r
}
)IR",
                                          diagnostic, *jit.context);
  ASSERT_TRUE(second) << diagnostic.getMessage().str();
  jit.engine->addModule(std::move(second));
  jit.engine->finalizeObject();
  auto function = jit.function<int64_t (*)(int64_t)>("second");
  ASSERT_NE(function, nullptr);
  EXPECT_EQ(function(5), 3 * 5 + 2 + 1000);

  uintptr_t first_address = jit.engine->getFunctionAddress("churn");
  uintptr_t second_address = jit.engine->getFunctionAddress("second");
  EXPECT_LT(second_address, kLow);
  auto first_block = heap->find(first_address);
  auto second_block = heap->find(second_address);
  ASSERT_TRUE(first_block && second_block);
  EXPECT_NE(first_block->owner, second_block->owner);
  std::set<std::string> names;
  for (const auto& owner : heap->stats().owners)
    if (owner.id == first_block->owner || owner.id == second_block->owner) names.insert(owner.name);
  EXPECT_EQ(names, (std::set<std::string>{"two", "two#2"}));
}

// libgcc's frame registry, observed: the test binary interposes __register_frame and
// __deregister_frame (libLLVM calls them through its PLT), records what is registered and
// forwards to libgcc. This shows which address the manager registers and that reclaiming the
// engine's code really deregisters it.
std::mutex registered_frames_mutex;
std::multiset<const void*> registered_frames;

template <typename F>
F next_function(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

bool frame_registered(uintptr_t address) {
  std::lock_guard<std::mutex> lock(registered_frames_mutex);
  return registered_frames.count(reinterpret_cast<const void*>(address)) != 0;
}

extern "C" void __register_frame(void* begin) {
  static auto next = next_function<void (*)(void*)>("__register_frame");
  {
    std::lock_guard<std::mutex> lock(registered_frames_mutex);
    registered_frames.insert(begin);
  }
  next(begin);
}

extern "C" void __deregister_frame(void* begin) {
  static auto next = next_function<void (*)(void*)>("__deregister_frame");
  {
    std::lock_guard<std::mutex> lock(registered_frames_mutex);
    auto it = registered_frames.find(begin);
    if (it != registered_frames.end()) registered_frames.erase(it);
  }
  next(begin);
}

extern "C" void codeheap_test_host_throw(int64_t x) {
  throw std::runtime_error("thrown by the host with " + std::to_string(x));
}

TEST(McjitTest, HostExceptionsUnwindThroughJitFramesAndFramesAreDeregisteredAtReclaim) {
  auto heap = make_heap("mcjit-eh");
  ASSERT_TRUE(heap);
  uintptr_t eh_frame = 0;
  {
    // jit_outer -> jit_inner -> host_throw, here codeheap_test_host_throw.
    auto define_host_throw = [](RtdyldMemoryManager& manager) {
      manager.define_symbol("host_throw", reinterpret_cast<uint64_t>(&codeheap_test_host_throw));
    };
    auto jit = make_mcjit(*heap, testdata::ir("host_throw"), "eh", define_host_throw);
    ASSERT_TRUE(jit.engine);
    for (const auto& section : jit.manager->sections())
      if (section.name == ".eh_frame") eh_frame = section.address;
    ASSERT_NE(eh_frame, 0u);
    EXPECT_EQ(heap->find(eh_frame)->arena, Arena::kReadOnly);
    // Registered at its execution (read-only view) address, not at the writable alias.
    EXPECT_TRUE(frame_registered(eh_frame));

    auto outer = jit.function<int64_t (*)(int64_t)>("jit_outer");
    ASSERT_NE(outer, nullptr);
    for (int i = 0; i < 3; ++i) {
      try {
        outer(41);
        ADD_FAILURE() << "no exception";
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "thrown by the host with 42");
      }
    }
  }
  // The engine is gone; its blocks wait in quarantine and, since a thread might still be
  // inside the code, its frames stay registered until a reclaim pass frees the blocks.
  EXPECT_EQ(heap->find(eh_frame)->state, BlockState::kQuarantined);
  EXPECT_TRUE(frame_registered(eh_frame));
  EXPECT_THROW(codeheap_test_host_throw(1), std::runtime_error);
  heap->reclaim([&](uintptr_t begin, uintptr_t) { return begin == eh_frame; });  // still in use
  EXPECT_TRUE(frame_registered(eh_frame));
  heap->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_FALSE(frame_registered(eh_frame));
  EXPECT_FALSE(heap->find(eh_frame));
  // Later throws make libgcc search its registry: stale frames, now trap bytes or reused
  // memory, would send it into garbage.
  EXPECT_THROW(codeheap_test_host_throw(2), std::runtime_error);
}

TEST(McjitTest, HeapExhaustionIsAReportedErrorNotAnAbort) {
  HeapOptions options;
  options.code_bytes = size_t{1} << 20;
  options.read_only_bytes = size_t{64} << 10;
  options.data_bytes = size_t{1} << 20;
  options.name = "mcjit-full";
  auto heap = make_heap(options);
  ASSERT_TRUE(heap);
  // Leave 24 KiB of read-only space: the module's 32 KiB of constants cannot fit.
  auto filler = heap->allocate(Arena::kReadOnly, size_t{40} << 10, 16);
  ASSERT_TRUE(filler);
  const HeapStats before = heap->stats();
  {
    auto jit = make_mcjit(*heap, R"IR(
@big = constant [4096 x i64] zeroinitializer
define i64 @peek(i64 %i) {
  %p = getelementptr [4096 x i64], ptr @big, i64 0, i64 %i
  %v = load i64, ptr %p
  ret i64 %v
}
)IR",
                          "too-big");
    ASSERT_TRUE(jit.engine);
    llvm::Error status = jit.manager->status();
    ASSERT_TRUE(bool(status));
    std::string message;
    llvm::handleAllErrors(std::move(status), [&](const HeapError& error) {
      EXPECT_EQ(error.code(), ErrorCode::kOutOfMemory);
      message = error.message();
    });
    EXPECT_NE(message.find(".rodata"), std::string::npos) << message;
    EXPECT_NE(message.find("too-big"), std::string::npos) << message;
    EXPECT_NE(message.find(to_string(Arena::kReadOnly)), std::string::npos) << message;
  }
  // The failed object never ran: its blocks were abandoned, not quarantined.
  const HeapStats after = heap->stats();
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(after.quarantined_bytes, 0u);
  EXPECT_TRUE(heap->abandon(filler->address));
}

// ORC with RuntimeDyld: RTDyldObjectLinkingLayer makes one manager per object; removing the
// resource tracker destroys it, and a heap failure fails the lookup, its cause going to the
// session's error reporter.
TEST(McjitTest, RTDyldObjectLinkingLayerPlacesRemovesAndReportsErrors) {
  HeapOptions options;
  options.code_bytes = size_t{1} << 20;
  options.read_only_bytes = size_t{64} << 10;
  options.data_bytes = size_t{1} << 20;
  options.name = "rtdyld-orc";
  auto heap = make_heap(options);
  ASSERT_TRUE(heap);
  auto jit = make_rtdyld_lljit(*heap, "orc-closures");
  ASSERT_TRUE(jit);
  ASSERT_EQ(error_text(jit->getMainJITDylib().define(llvm::orc::absoluteSymbols(
                {{jit->mangleAndIntern("codeheap_test_host_scale"),
                  {llvm::orc::ExecutorAddr::fromPtr(&codeheap_test_host_scale),
                   llvm::JITSymbolFlags::Exported | llvm::JITSymbolFlags::Callable}}}))),
            "");

  auto tracker = jit->getMainJITDylib().createResourceTracker();
  ASSERT_EQ(error_text(jit->addIRModule(tracker, parse_module(closures_ir()))), "");
  auto dispatch = jit->lookup("dispatch");
  ASSERT_TRUE(bool(dispatch)) << llvm::toString(dispatch.takeError());
  EXPECT_LT(dispatch->getValue(), kLow);
  ASSERT_TRUE(heap->find(dispatch->getValue()));
  EXPECT_EQ(heap->find(dispatch->getValue())->arena, Arena::kCode);
  const int64_t env[4] = {11, 7, 5, 0x55};
  auto call = dispatch->toPtr<int64_t (*)(int32_t, const int64_t*, int64_t)>();
  for (int which = 0; which < 8; ++which)
    EXPECT_EQ(call(which, env, 9), reference_dispatch(which, env, 9)) << which;
  auto call_host = jit->lookup("call_host");
  ASSERT_TRUE(bool(call_host)) << llvm::toString(call_host.takeError());
  EXPECT_EQ(call_host->toPtr<int64_t (*)(int64_t)>()(5), codeheap_test_host_scale(6) + 7);

  EXPECT_GT(heap->stats().used_bytes, 0u);
  ASSERT_EQ(error_text(tracker->remove()), "");
  EXPECT_EQ(heap->stats().used_bytes, 0u);
  EXPECT_GT(heap->stats().quarantined_bytes, 0u);

  // 128 KiB of constants in a 64 KiB read-only arena: the lookup fails, and ORC hands the
  // manager's error (finalizeMemory's message) to the session's error reporter.
  std::string reported;
  jit->getExecutionSession().setErrorReporter(
      [&](llvm::Error error) { reported += llvm::toString(std::move(error)); });
  ASSERT_EQ(error_text(jit->addIRModule(parse_module(R"IR(
@huge = constant [16384 x i64] zeroinitializer
define i64 @peek_huge(i64 %i) {
  %p = getelementptr [16384 x i64], ptr @huge, i64 0, i64 %i
  %v = load i64, ptr %p
  ret i64 %v
}
)IR"))),
            "");
  auto failed = jit->lookup("peek_huge");
  ASSERT_FALSE(bool(failed));
  EXPECT_NE(llvm::toString(failed.takeError()).find("peek_huge"), std::string::npos);
  EXPECT_NE(reported.find("cannot place section '.rodata'"), std::string::npos) << reported;
  EXPECT_NE(reported.find("orc-closures"), std::string::npos) << reported;
  EXPECT_EQ(heap->stats().used_bytes, 0u);  // the failed object's blocks are abandoned
}

// With setProcessAllSections(true) RuntimeDyld also loads the DWARF sections (into the
// read-only arena, written through the alias) but links them at address zero, since DWARF
// refers to them by offset; the manager must not remap those.
TEST(McjitTest, DebugSectionsLoadedByProcessAllSectionsStayAtAddressZero) {
  auto heap = make_heap("rtdyld-debug");
  ASSERT_TRUE(heap);
  std::map<std::string, uint64_t> load_addresses;
  auto jit = make_rtdyld_lljit(*heap, "debug", [&](llvm::orc::RTDyldObjectLinkingLayer& layer) {
    layer.setProcessAllSections(true);
    layer.setNotifyLoaded([&](llvm::orc::MaterializationResponsibility&,
                              const llvm::object::ObjectFile& object,
                              const llvm::RuntimeDyld::LoadedObjectInfo& info) {
      for (const auto& section : object.sections())
        if (auto name = section.getName())
          load_addresses[name->str()] = info.getSectionLoadAddress(section);
        else
          llvm::consumeError(name.takeError());
    });
  });
  ASSERT_TRUE(jit);
  ASSERT_EQ(error_text(jit->addIRModule(parse_module(testdata::ir("debug_info")))), "");
  auto function = jit->lookup("with_debug_info");
  ASSERT_TRUE(bool(function)) << llvm::toString(function.takeError());
  EXPECT_EQ(function->toPtr<int64_t (*)(int64_t)>()(41), 42);

  ASSERT_TRUE(load_addresses.count(".text"));
  EXPECT_EQ(load_addresses[".text"], function->getValue());
  ASSERT_TRUE(load_addresses.count(".debug_info"));
  ASSERT_TRUE(load_addresses.count(".debug_str"));
  EXPECT_EQ(load_addresses[".debug_info"], 0u);
  EXPECT_EQ(load_addresses[".debug_str"], 0u);
}

}  // namespace
}  // namespace codeheap::jit
