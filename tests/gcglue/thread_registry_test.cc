// The stack scanner sees a thread's program counter and its return addresses inside code
// blocks, and stops seeing them once the thread has left.
#include "gcglue/thread_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "codeheap/heap.h"
#include "tests/gcglue/fresh_stack.h"

namespace codeheap::gc {
namespace {

// spin(flag): loops while *flag != 0, then returns.
//   0: cmp byte [rdi], 0 ; 3: jne 0 ; 5: ret
constexpr uint8_t kSpin[] = {0x80, 0x3F, 0x00, 0x75, 0xFB, 0xC3};

// nest(depth, unused, callback): recurses `depth` times through a direct call, then calls
// callback() with the stack aligned, so the block is referenced only by return addresses.
//   0: test rdi, rdi ; 3: jz 14 ; 5: dec rdi ; 8: call 0 ; 13: ret
//  14: push rbp ; mov rbp, rsp ; and rsp, -16 ; call rdx ; mov rsp, rbp ; pop rbp ; ret
constexpr uint8_t kNest[] = {0x48, 0x85, 0xFF, 0x74, 0x09, 0x48, 0xFF, 0xCF, 0xE8,
                             0xF3, 0xFF, 0xFF, 0xFF, 0xC3, 0x55, 0x48, 0x89, 0xE5,
                             0x48, 0x83, 0xE4, 0xF0, 0xFF, 0xD2, 0x48, 0x89, 0xEC,
                             0x5D, 0xC3};

::testing::AssertionResult ok(llvm::Error error) {
  if (!error) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << llvm::toString(std::move(error));
}

class ThreadRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HeapOptions options;
    options.code_bytes = 1 << 20;
    options.read_only_bytes = 1 << 16;
    options.data_bytes = 1 << 16;
    auto heap = Heap::create(options);
    ASSERT_TRUE(heap) << heap.error().message;
    heap_ = std::move(*heap);
    auto registry = ThreadRegistry::create();
    ASSERT_TRUE(bool(registry)) << llvm::toString(registry.takeError());
    registry_ = std::move(*registry);
  }

  AddressRange install(const uint8_t* code, size_t size) {
    auto block = heap_->allocate(Arena::kCode, size, 16);
    EXPECT_TRUE(block);
    std::memcpy(block->writable, code, size);
    return {block->address, block->address + size};
  }

  ScanReport scan(std::vector<AddressRange> ranges) {
    ScanReport report;
    testing::run_on_fresh_stack([&] { report = registry_->scan(ranges); });
    return report;
  }

  bool referenced(AddressRange range) {
    ScanReport report = scan({range});
    EXPECT_EQ(report.threads_timed_out, 0u);
    return report.referenced.at(0);
  }

  std::unique_ptr<Heap> heap_;
  std::unique_ptr<ThreadRegistry> registry_;
};

TEST_F(ThreadRegistryTest, SeesProgramCounterOfSpinningThread) {
  AddressRange spin = install(kSpin, sizeof kSpin);
  std::atomic<uint8_t> flag{1};
  std::atomic<bool> registered{false};
  std::thread worker([&] {
    ASSERT_TRUE(ok(registry_->register_current_thread()));
    registered = true;
    reinterpret_cast<void (*)(std::atomic<uint8_t>*)>(spin.begin)(&flag);
    ASSERT_TRUE(ok(registry_->unregister_current_thread()));
  });
  while (!registered) std::this_thread::yield();
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(referenced(spin)) << "pass " << i;
  flag = 0;
  worker.join();
  EXPECT_FALSE(referenced(spin));
}

std::atomic<bool> g_parked{false};
std::atomic<bool> g_release{false};
void park() {
  g_parked = true;
  while (!g_release) std::this_thread::yield();
}

TEST_F(ThreadRegistryTest, SeesReturnAddressesOfDeepRecursion) {
  AddressRange nest = install(kNest, sizeof kNest);
  AddressRange unrelated = install(kSpin, sizeof kSpin);
  g_parked = false;
  g_release = false;
  std::thread worker([&] {
    ASSERT_TRUE(ok(registry_->register_current_thread()));
    reinterpret_cast<void (*)(long, long, void (*)())>(nest.begin)(1000, 0, &park);
    ASSERT_TRUE(ok(registry_->unregister_current_thread()));
  });
  while (!g_parked) std::this_thread::yield();
  ScanReport report = scan({unrelated, nest});
  EXPECT_EQ(report.threads_scanned, 1u);  // the worker (the scanning thread is not registered)
  EXPECT_FALSE(report.referenced.at(0));
  EXPECT_TRUE(report.referenced.at(1));
  EXPECT_GT(report.stack_words_scanned, 1000u);
  g_release = true;
  worker.join();
  EXPECT_FALSE(referenced(nest));
}

// A range contains its end: a call that ends a function pushes the block's end as its return
// address. The ranges here are numbers far from any address or small integer a stack holds.
constexpr uintptr_t kHeld = 0x5eedc0de12340000;

TEST_F(ThreadRegistryTest, AWordEqualToARangesEndIsInsideItAndInTheNextRange) {
  std::atomic<bool> holding{false};
  std::atomic<bool> done{false};
  std::thread worker([&] {
    ASSERT_TRUE(ok(registry_->register_current_thread()));
    volatile uintptr_t held = kHeld;  // in this frame until `done`
    holding = true;
    while (!done) std::this_thread::yield();
    EXPECT_EQ(held, kHeld);
    ASSERT_TRUE(ok(registry_->unregister_current_thread()));
  });
  while (!holding) std::this_thread::yield();
  // Adjacent ranges around the word, in no particular order (scan sorts them).
  const AddressRange before{kHeld - 64, kHeld - 32}, ending{kHeld - 32, kHeld},
      beginning{kHeld, kHeld + 32}, after{kHeld + 32, kHeld + 64};
  ScanReport report = scan({after, ending, before, beginning});
  EXPECT_EQ(report.threads_timed_out, 0u);
  EXPECT_EQ(report.referenced, (std::vector<bool>{false, true, false, true}));
  // Alone, the range that ends at the word; then ranges that just miss it on either side.
  EXPECT_TRUE(referenced(ending));
  report = scan({{kHeld - 32, kHeld - 1}, {kHeld + 1, kHeld + 33}});
  EXPECT_EQ(report.referenced, (std::vector<bool>{false, false}));
  done = true;
  worker.join();
}

TEST_F(ThreadRegistryTest, UnregisteredThreadIsNotScanned) {
  AddressRange spin = install(kSpin, sizeof kSpin);
  std::atomic<uint8_t> flag{1};
  std::atomic<bool> started{false};
  std::thread worker([&] {
    started = true;
    reinterpret_cast<void (*)(std::atomic<uint8_t>*)>(spin.begin)(&flag);
  });
  while (!started) std::this_thread::yield();
  ScanReport report = scan({spin});
  EXPECT_EQ(report.threads_scanned, 0u);  // this is why threads must register
  EXPECT_FALSE(report.referenced.at(0));
  flag = 0;
  worker.join();
}

TEST_F(ThreadRegistryTest, RegistrationErrors) {
  llvm::Error not_registered = registry_->unregister_current_thread();
  ASSERT_TRUE(bool(not_registered));
  EXPECT_NE(llvm::toString(std::move(not_registered)).find("not registered"), std::string::npos);
  ASSERT_TRUE(ok(registry_->register_current_thread()));
  llvm::Error twice = registry_->register_current_thread();
  ASSERT_TRUE(bool(twice));
  EXPECT_NE(llvm::toString(std::move(twice)).find("already registered"), std::string::npos);
  EXPECT_EQ(registry_->registered_threads(), 1u);
  ASSERT_TRUE(ok(registry_->unregister_current_thread()));
  EXPECT_EQ(registry_->registered_threads(), 0u);
}

TEST(ThreadRegistryOptions, RejectsNonRealtimeSignal) {
  ScanOptions options;
  options.signal = SIGUSR1;
  auto registry = ThreadRegistry::create(options);
  ASSERT_FALSE(bool(registry));
  EXPECT_NE(llvm::toString(registry.takeError()).find("real-time signal"), std::string::npos);
}

}  // namespace
}  // namespace codeheap::gc
