// The stack scanner sees a thread's program counter and its return addresses inside code
// blocks, and stops seeing them once the thread has left; a registered scanning thread reads
// its own stack from where its pass began.
#include "scan/thread_registry.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "codeheap/heap.h"
#include "tests/scan/fresh_stack.h"

namespace codeheap::scan {
namespace {

// spin(flag): loops while *flag != 0, then returns.
//   0: cmp byte [rdi], 0 ; 3: jne 0 ; 5: ret
constexpr uint8_t kSpin[] = {0x80, 0x3F, 0x00, 0x75, 0xFB, 0xC3};

// nest(depth, unused, callback): recurses `depth` times through a direct call, then calls
// callback() with the stack aligned, so the block is referenced only by return addresses.
//   0: test rdi, rdi ; 3: jz 14 ; 5: dec rdi ; 8: call 0 ; 13: ret
//  14: push rbp ; mov rbp, rsp ; and rsp, -16 ; call rdx ; mov rsp, rbp ; pop rbp ; ret
constexpr uint8_t kNest[] = {0x48, 0x85, 0xFF, 0x74, 0x09, 0x48, 0xFF, 0xCF, 0xE8, 0xF3,
                             0xFF, 0xFF, 0xFF, 0xC3, 0x55, 0x48, 0x89, 0xE5, 0x48, 0x83,
                             0xE4, 0xF0, 0xFF, 0xD2, 0x48, 0x89, 0xEC, 0x5D, 0xC3};

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

  // Scans sorted `ranges` from a fresh, unregistered stack; `hits` receives the marks.
  ScanReport scan(const std::vector<AddressRange>& ranges, std::vector<uint8_t>& hits) {
    hits.assign(ranges.size(), 0);
    ScanReport report;
    testing::run_on_fresh_stack([&] { report = registry_->scan(ranges, hits); });
    return report;
  }

  bool referenced(AddressRange range) {
    std::vector<uint8_t> hits;
    ScanReport report = scan({range}, hits);
    EXPECT_EQ(report.threads_timed_out, 0u);
    return hits.at(0) != 0;
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
  std::vector<AddressRange> ranges{nest, unrelated};
  std::sort(ranges.begin(), ranges.end(),
            [](const AddressRange& a, const AddressRange& b) { return a.begin < b.begin; });
  std::vector<uint8_t> hits;
  ScanReport report = scan(ranges, hits);
  EXPECT_EQ(report.threads_scanned, 1u);  // the worker (the scanning thread is not registered)
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(hits[i], ranges[i].begin == nest.begin ? 1 : 0) << i;
  }
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
  // Adjacent ranges around the word.
  const AddressRange before{kHeld - 64, kHeld - 32}, ending{kHeld - 32, kHeld},
      beginning{kHeld, kHeld + 32}, after{kHeld + 32, kHeld + 64};
  std::vector<uint8_t> hits;
  ScanReport report = scan({before, ending, beginning, after}, hits);
  EXPECT_EQ(report.threads_timed_out, 0u);
  EXPECT_EQ(hits, (std::vector<uint8_t>{0, 1, 1, 0}));
  // Alone, the range that ends at the word; then ranges that just miss it on either side.
  EXPECT_TRUE(referenced(ending));
  scan({{kHeld - 32, kHeld - 1}, {kHeld + 1, kHeld + 33}}, hits);
  EXPECT_EQ(hits, (std::vector<uint8_t>{0, 0}));
  done = true;
  worker.join();
}

// A registered thread that reclaims reads its own stack: the frames of its callers, from where
// run_pass began, not the pass's own frames, which hold the addresses the pass looks for.
// Numbers far from any address, as above; the ranges live in heap memory, not on the stack.
constexpr uintptr_t kOnlyInThePass = 0x5eedc0de56780000;

TEST_F(ThreadRegistryTest, ARegisteredCallerReadsItsOwnStackFromWhereThePassBegan) {
  testing::run_on_fresh_stack([&] {
    ASSERT_TRUE(ok(registry_->register_current_thread()));
    volatile uintptr_t held = kHeld;      // in a caller's frame
    std::vector<AddressRange> ranges(2);  // written in place: no copy on this stack
    ranges[0].begin = kHeld;
    ranges[0].end = kHeld + 32;
    ranges[1].begin = kOnlyInThePass;
    ranges[1].end = kOnlyInThePass + 32;
    std::vector<uint8_t> hits(ranges.size());
    ScanReport report;
    registry_->run_pass([&] {
      volatile uintptr_t in_the_pass = kOnlyInThePass;
      report = registry_->scan(ranges, hits);
      EXPECT_EQ(in_the_pass, kOnlyInThePass);
    });
    EXPECT_EQ(report.threads_scanned, 1u);  // itself, without a signal
    EXPECT_EQ(report.threads_timed_out, 0u);
    EXPECT_EQ(hits, (std::vector<uint8_t>{1, 0}));
    // Outside a pass it reads itself from the scan's frame up: still what its callers hold.
    hits.assign(ranges.size(), 0);
    registry_->scan(ranges, hits);
    EXPECT_EQ(hits[0], 1);
    EXPECT_EQ(held, kHeld);
    ASSERT_TRUE(ok(registry_->unregister_current_thread()));
  });
}

// Heap::reclaim promises sorted ranges; anything else is a bug, and keeps every range.
TEST_F(ThreadRegistryTest, UnsortedRangesAreAllKept) {
  std::vector<uint8_t> hits;
  scan({{kHeld + 64, kHeld + 96}, {kHeld - 64, kHeld - 32}}, hits);
  EXPECT_EQ(hits, (std::vector<uint8_t>{1, 1}));
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
  std::vector<uint8_t> hits;
  ScanReport report = scan({spin}, hits);
  EXPECT_EQ(report.threads_scanned, 0u);  // this is why threads must register
  EXPECT_EQ(hits.at(0), 0);
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
}  // namespace codeheap::scan
