// Copy-and-patch stencils: the tables stencil_tool writes, units emitted by CodeUnitBuilder and
// run (every hole kind, labels, dropped tail jumps, helper trampolines, read-only data,
// exceptions through stencil frames), failures that leave the heap alone, and objects the tool
// refuses. The stencils are tests/jit/stencils/test_stencils.c.
#include "jit/stencil_emitter.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "jit/error.h"
#include "tests/jit/orc_support.h"
#include "tests/test_stencils.h"

// The host helpers the stencils call: in a PIE test binary, far out of rel32 range of the heap.
extern "C" int64_t stencil_test_add(int64_t x) { return x + 100; }
extern "C" int64_t stencil_test_throw(int64_t x) {
  if (x == 13) throw std::runtime_error("thirteen");
  return x * 2;
}

// libgcc's FDE lookup (not in its public unwind.h): the FDE covering `pc`, or null.
struct DwarfEhBases {
  void* tbase;
  void* dbase;
  void* func;
};
extern "C" const void* _Unwind_Find_FDE(const void* pc, DwarfEhBases* bases);

namespace codeheap::jit {
namespace {

namespace ts = test_stencils;
using orc_testing::error_text;
using orc_testing::k2GiB;
using orc_testing::make_small_heap;
using orc_testing::stats_without_counters;
using ::testing::HasSubstr;
using Entry = int64_t (*)(int64_t* env, int64_t x);

const Stencil& stencil(uint16_t index) { return ts::library().stencils[index]; }

Entry entry(uintptr_t address) { return reinterpret_cast<Entry>(address); }

std::unique_ptr<HelperTable> make_helpers(Heap& heap) {
  auto helpers = HelperTable::create(heap);
  if (!helpers) {
    ADD_FAILURE() << error_text(helpers.takeError());
    return nullptr;
  }
  for (auto [name, address] : {std::pair{"stencil_test_add", &stencil_test_add},
                               std::pair{"stencil_test_throw", &stencil_test_throw}})
    if (auto err = (*helpers)->define(name, reinterpret_cast<const void*>(address)))
      ADD_FAILURE() << error_text(std::move(err));
  return std::move(*helpers);
}

// The permissions of the mappings overlapping [begin, end), from /proc/self/maps.
std::vector<std::string> permissions(uintptr_t begin, uintptr_t end) {
  std::ifstream maps("/proc/self/maps");
  std::vector<std::string> found;
  for (std::string line; std::getline(maps, line);) {
    std::istringstream fields(line);
    std::string range, perms;
    fields >> range >> perms;
    const uintptr_t low = std::stoull(range.substr(0, range.find('-')), nullptr, 16);
    const uintptr_t high = std::stoull(range.substr(range.find('-') + 1), nullptr, 16);
    if (low < end && begin < high) found.push_back(perms);
  }
  return found;
}

uint32_t code_size(std::initializer_list<uint16_t> stencils) {
  uint32_t size = 0;
  for (uint16_t s : stencils) size += stencil(s).code_size;
  return size;
}

class StencilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    heap_ = make_small_heap("stencils");
    ASSERT_NE(heap_, nullptr);
    helpers_ = make_helpers(*heap_);
    ASSERT_NE(helpers_, nullptr);
  }

  // Emits the builder's unit, expecting success.
  EmittedUnit emit(CodeUnitBuilder& builder, const char* name) {
    auto unit = builder.emit(*heap_, name);
    if (!unit) {
      ADD_FAILURE() << error_text(unit.takeError());
      return {};
    }
    EXPECT_LT(unit->code + unit->code_size, k2GiB);
    return std::move(*unit);
  }

  std::unique_ptr<Heap> heap_;
  std::unique_ptr<HelperTable> helpers_;
};

TEST(StencilTool, TablesDescribeEveryHoleKindAndUnwindInfo) {
  const StencilLibrary& library = ts::library();
  EXPECT_STREQ(library.name, "//tests:test_stencils");
  EXPECT_STREQ(stencil(ts::kStencil_add_const).name, "add_const");
  EXPECT_STREQ(library.symbols[ts::kSymbol_K], "K");
  EXPECT_STREQ(library.symbols[ts::kSymbol_stencil_test_add], "stencil_test_add");
  EXPECT_GT(library.cie_size, 0u);
  for (uint32_t i = 0; i < library.stencil_count; ++i) {
    EXPECT_GT(library.stencils[i].fde_size, 0u) << library.stencils[i].name;
    if (i > 0) {
      EXPECT_LT(std::strcmp(library.stencils[i - 1].name, library.stencils[i].name), 0);
    }
  }

  auto kinds = [](const Stencil& s) {
    std::vector<std::tuple<HoleKind, HoleTarget, bool>> out;
    for (uint32_t h = 0; h < s.hole_count; ++h)
      out.emplace_back(s.holes[h].kind, s.holes[h].target, s.holes[h].branch);
    return out;
  };
  using ::testing::Contains;
  using ::testing::Eq;
  const auto branch = std::make_tuple(HoleKind::kPcRel32, HoleTarget::kSymbol, true);
  EXPECT_THAT(kinds(stencil(ts::kStencil_add_const)),
              Contains(Eq(std::make_tuple(HoleKind::kAbs64, HoleTarget::kSymbol, false))));
  EXPECT_THAT(kinds(stencil(ts::kStencil_add_small)),
              Contains(Eq(std::make_tuple(HoleKind::kAbs32S, HoleTarget::kSymbol, false))));
  EXPECT_THAT(kinds(stencil(ts::kStencil_call_host)), Contains(Eq(branch)));
  EXPECT_THAT(kinds(stencil(ts::kStencil_greeting)),
              Contains(Eq(std::make_tuple(HoleKind::kAbs32, HoleTarget::kReadOnly, false))));
  EXPECT_THAT(kinds(stencil(ts::kStencil_lookup)),
              Contains(Eq(std::make_tuple(HoleKind::kAbs32S, HoleTarget::kReadOnly, false))));

  // A musttail continuation ends the code with a jmp rel32 whose hole is the tail jump.
  const Stencil& add = stencil(ts::kStencil_add_const);
  ASSERT_GE(add.tail_jump_hole, 0);
  EXPECT_EQ(add.code[add.code_size - 5], 0xE9);
  EXPECT_EQ(add.holes[add.tail_jump_hole].symbol, ts::kSymbol_CONT);
  EXPECT_EQ(stencil(ts::kStencil_done).tail_jump_hole, -1);

  // A value table can be shared by instances; a jump table holds the instance's code addresses.
  EXPECT_TRUE(stencil(ts::kStencil_lookup).rodata_shared);
  const Stencil& dispatch = stencil(ts::kStencil_dispatch);
  EXPECT_FALSE(dispatch.rodata_shared);
  ASSERT_GT(dispatch.rodata_hole_count, 0u);
  EXPECT_EQ(dispatch.rodata_holes[0].kind, HoleKind::kAbs64);
  EXPECT_EQ(dispatch.rodata_holes[0].target, HoleTarget::kCode);
}

TEST_F(StencilTest, ConstantsAndDroppedTailJumps) {
  CodeUnitBuilder builder(ts::library(), *helpers_);
  const auto second = builder.new_label(), last = builder.new_label();
  builder.append(ts::kStencil_add_const);
  builder.set_value(ts::kSymbol_K, 0x123456789ab);  // needs all 64 bits
  builder.set_label(ts::kSymbol_CONT, second);
  builder.place(second);
  builder.append(ts::kStencil_add_small);
  builder.set_value(ts::kSymbol_K32, static_cast<uint64_t>(-1000));
  builder.set_label(ts::kSymbol_CONT, last);
  builder.place(last);
  builder.append(ts::kStencil_done);
  EmittedUnit unit = emit(builder, "constants");
  ASSERT_NE(unit.code, 0u);

  EXPECT_EQ(entry(unit.code)(nullptr, 1), 1 + 0x123456789ab - 1000);
  // Both continuations fell through: 5 bytes less each, the stencils back to back.
  EXPECT_EQ(unit.code_size,
            code_size({ts::kStencil_add_const, ts::kStencil_add_small, ts::kStencil_done}) - 10);
  EXPECT_EQ(builder.label_address(second),
            unit.code + stencil(ts::kStencil_add_const).code_size - 5);
  EXPECT_EQ(builder.label_address(last),
            unit.code + unit.code_size - stencil(ts::kStencil_done).code_size);

  // Low, in the code arena, never writable while executable.
  const auto block = heap_->find(unit.code);
  ASSERT_TRUE(block.has_value());
  EXPECT_EQ(block->arena, Arena::kCode);
  EXPECT_EQ(block->owner, unit.owner);
  for (const std::string& perms : permissions(unit.code, unit.code + unit.code_size))
    EXPECT_EQ(perms.substr(0, 3), "r-x");
  const HeapStats stats = heap_->stats();
  const uintptr_t reservation_begin = stats.arenas.front().begin;
  const uintptr_t reservation_end = stats.arenas.back().end;
  for (const std::string& perms : permissions(reservation_begin, reservation_end))
    EXPECT_FALSE(perms[1] == 'w' && perms[2] == 'x') << perms;
  EXPECT_FALSE(static_cast<bool>(retire_unit(*heap_, unit)));
}

TEST_F(StencilTest, JumpsToLabelsForwardAndBackward) {
  CodeUnitBuilder builder(ts::library(), *helpers_);
  const auto loop = builder.new_label(), exit = builder.new_label();
  builder.append(ts::kStencil_add_const);
  builder.set_value(ts::kSymbol_K, 1);
  builder.set_label(ts::kSymbol_CONT, loop);  // next: dropped
  builder.place(loop);
  builder.append(ts::kStencil_count_down);
  builder.set_label(ts::kSymbol_LOOP, loop);  // backward, to its own start
  builder.set_label(ts::kSymbol_CONT, exit);  // forward, over the next stencil
  builder.append(ts::kStencil_add_const);     // never runs
  builder.set_value(ts::kSymbol_K, 1000);
  builder.set_label(ts::kSymbol_CONT, exit);
  builder.place(exit);
  builder.append(ts::kStencil_done);
  EmittedUnit unit = emit(builder, "loop");
  ASSERT_NE(unit.code, 0u);

  int64_t iterations = 0;
  EXPECT_EQ(entry(unit.code)(&iterations, 4), 0);
  EXPECT_EQ(iterations, 5);
  // Only the first and the third instances' jumps go to the next stencil.
  EXPECT_EQ(unit.code_size, code_size({ts::kStencil_add_const, ts::kStencil_count_down,
                                       ts::kStencil_add_const, ts::kStencil_done}) -
                                10);
  EXPECT_FALSE(static_cast<bool>(retire_unit(*heap_, unit)));
}

TEST_F(StencilTest, HostHelpersAreCalledThroughTrampolines) {
  const auto helper = reinterpret_cast<uintptr_t>(&stencil_test_add);
  ASSERT_GE(helper, uintptr_t{1} << 32) << "the test binary is expected to be PIE";
  EXPECT_EQ(helpers_->address("stencil_test_add"), helper);
  const uintptr_t trampoline = helpers_->call_target("stencil_test_add");
  EXPECT_LT(trampoline, k2GiB);
  ASSERT_TRUE(heap_->find(trampoline).has_value());
  EXPECT_EQ(heap_->find(trampoline)->arena, Arena::kCode);
  EXPECT_EQ(helpers_->address("undefined"), 0u);
  EXPECT_THAT(error_text(helpers_->define("stencil_test_add", &helper)),
              HasSubstr("already defined"));

  CodeUnitBuilder builder(ts::library(), *helpers_);
  const auto last = builder.new_label();
  builder.append(ts::kStencil_call_host);
  builder.set_label(ts::kSymbol_CONT, last);
  builder.place(last);
  builder.append(ts::kStencil_done);
  EmittedUnit unit = emit(builder, "host call");
  ASSERT_NE(unit.code, 0u);
  EXPECT_EQ(entry(unit.code)(nullptr, 5), 5 + 100 + 1);
  EXPECT_FALSE(static_cast<bool>(retire_unit(*heap_, unit)));
}

TEST_F(StencilTest, ReadOnlyDataSwitchTablesAndStrings) {
  CodeUnitBuilder builder(ts::library(), *helpers_);
  const auto lookup = builder.new_label(), greet1 = builder.new_label(),
             greet2 = builder.new_label(), dispatch1 = builder.new_label(),
             dispatch2 = builder.new_label(), last = builder.new_label();
  builder.place(lookup);
  builder.append(ts::kStencil_lookup);
  builder.set_label(ts::kSymbol_CONT, last);
  for (auto label : {greet1, greet2}) {
    builder.place(label);
    builder.append(ts::kStencil_greeting);
    builder.set_label(ts::kSymbol_CONT, last);
  }
  for (auto label : {dispatch1, dispatch2}) {
    builder.place(label);
    builder.append(ts::kStencil_dispatch);
    builder.set_label(ts::kSymbol_CONT, last);
  }
  builder.place(last);
  builder.append(ts::kStencil_done);
  EmittedUnit unit = emit(builder, "read-only data");
  ASSERT_NE(unit.code, 0u);

  const int64_t expected_lookup[] = {13, 42, 7, 99, 1000, -5, 123456, -1, -1};
  for (int64_t x = 0; x < 9; ++x)
    EXPECT_EQ(entry(builder.label_address(lookup))(nullptr, x), expected_lookup[x]) << x;

  // Both instances return the one shared copy of the string, in the read-only arena.
  const int64_t first = entry(builder.label_address(greet1))(nullptr, 0);
  const int64_t second = entry(builder.label_address(greet2))(nullptr, 0);
  EXPECT_EQ(first, second);
  EXPECT_STREQ(reinterpret_cast<const char*>(first), "hello, stencil");
  ASSERT_TRUE(heap_->find(first).has_value());
  EXPECT_EQ(heap_->find(first)->arena, Arena::kReadOnly);
  EXPECT_EQ(heap_->find(first)->address, unit.read_only);

  // Each dispatch instance jumps within its own code through its own jump table.
  int64_t env[2] = {0, 30};
  const int64_t expected_dispatch[] = {90, 1030, 30 ^ 5, 120, -47, 10, 2, 0};
  for (auto label : {dispatch1, dispatch2})
    for (int64_t x = 0; x < 8; ++x)
      EXPECT_EQ(entry(builder.label_address(label))(env, x), expected_dispatch[x]) << x;
  EXPECT_FALSE(static_cast<bool>(retire_unit(*heap_, unit)));
}

TEST_F(StencilTest, ExceptionsUnwindThroughStencilFramesUntilTheUnitIsReclaimed) {
  const HeapStats empty = stats_without_counters(*heap_);
  CodeUnitBuilder builder(ts::library(), *helpers_);
  const auto call = builder.new_label(), last = builder.new_label();
  builder.append(ts::kStencil_add_const);
  builder.set_value(ts::kSymbol_K, 3);
  builder.set_label(ts::kSymbol_CONT, call);
  builder.place(call);
  builder.append(ts::kStencil_call_thrower);
  builder.set_label(ts::kSymbol_CONT, last);
  builder.place(last);
  builder.append(ts::kStencil_done);
  EmittedUnit unit = emit(builder, "thrower");
  ASSERT_NE(unit.code, 0u);
  const Entry run = entry(unit.code);

  EXPECT_EQ(run(nullptr, 1), (1 + 3) * 2 + 1);
  try {
    run(nullptr, 10);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "thirteen");
  }
  // The FDE of the frame the exception passed through lies in the unit's read-only block.
  const auto inside_call = reinterpret_cast<const void*>(builder.label_address(call) + 1);
  DwarfEhBases bases{};
  const auto fde = reinterpret_cast<uintptr_t>(_Unwind_Find_FDE(inside_call, &bases));
  EXPECT_GE(fde, unit.read_only);
  EXPECT_LT(fde, unit.read_only + unit.read_only_size);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(bases.func), builder.label_address(call));

  // Retired, the unit keeps its unwind info until a reclaim pass frees it.
  ASSERT_FALSE(static_cast<bool>(retire_unit(*heap_, unit)));
  EXPECT_EQ(unit.owner, kNoOwner);
  EXPECT_NE(_Unwind_Find_FDE(inside_call, &bases), nullptr);
  heap_->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_EQ(_Unwind_Find_FDE(inside_call, &bases), nullptr);
  EXPECT_EQ(stats_without_counters(*heap_), empty) << heap_->dump_text();
}

TEST_F(StencilTest, UnboundSymbolsAreErrorsThatNameStencilAndSymbol) {
  const HeapStats before = stats_without_counters(*heap_);
  CodeUnitBuilder builder(ts::library(), *helpers_);
  builder.append(ts::kStencil_add_const);
  builder.set_value(ts::kSymbol_CONT, 0x1000);
  auto unit = builder.emit(*heap_, "unbound");
  ASSERT_FALSE(static_cast<bool>(unit));
  const std::string message = error_text(unit.takeError());
  EXPECT_THAT(message, HasSubstr("'add_const'"));
  EXPECT_THAT(message, HasSubstr("'K'"));
  EXPECT_EQ(stats_without_counters(*heap_), before);

  // A label that is never placed.
  builder.reset();
  builder.append(ts::kStencil_add_const);
  builder.set_value(ts::kSymbol_K, 1);
  builder.set_label(ts::kSymbol_CONT, builder.new_label());
  EXPECT_THAT(error_text(builder.emit(*heap_, "unplaced").takeError()),
              HasSubstr("'CONT' is set to a label never placed"));

  // A symbol set twice for one instance.
  builder.reset();
  builder.append(ts::kStencil_add_const);
  builder.set_value(ts::kSymbol_K, 1);
  builder.set_value(ts::kSymbol_CONT, 0x1000);
  builder.set_value(ts::kSymbol_K, 2);
  EXPECT_THAT(error_text(builder.emit(*heap_, "twice").takeError()), HasSubstr("'K' is set twice"));
  EXPECT_EQ(stats_without_counters(*heap_), before);
}

TEST_F(StencilTest, ValuesThatDoNotFitLeaveTheHeapAlone) {
  const HeapStats before = stats_without_counters(*heap_);
  CodeUnitBuilder builder(ts::library(), *helpers_);
  const auto last = builder.new_label();
  builder.append(ts::kStencil_add_small);
  builder.set_value(ts::kSymbol_K32, uint64_t{1} << 40);  // a 32-bit sign-extended hole
  builder.set_label(ts::kSymbol_CONT, last);
  builder.place(last);
  builder.append(ts::kStencil_done);
  const std::string message = error_text(builder.emit(*heap_, "too big").takeError());
  EXPECT_THAT(message, HasSubstr("'add_small'"));
  EXPECT_THAT(message, HasSubstr("K32"));
  EXPECT_THAT(message, HasSubstr("does not fit"));
  EXPECT_EQ(stats_without_counters(*heap_), before) << heap_->dump_text();
}

TEST(StencilEmitter, AFullHeapIsAnOutOfMemoryErrorThatChangesNothing) {
  HeapOptions options;
  options.code_bytes = 4096;
  options.read_only_bytes = 4096;
  options.data_bytes = 4096;
  options.retain_free_bytes = 0;
  auto heap = Heap::create(options);
  ASSERT_TRUE(heap.has_value()) << heap.error().message;
  auto helpers = make_helpers(**heap);
  ASSERT_NE(helpers, nullptr);
  const size_t free_code = (*heap)->stats().arenas[0].largest_free_block;
  auto filler = (*heap)->allocate(Arena::kCode, free_code, 16);
  ASSERT_TRUE(filler.has_value()) << filler.error().message;
  const HeapStats before = stats_without_counters(**heap);

  CodeUnitBuilder builder(ts::library(), *helpers);
  builder.append(ts::kStencil_done);
  builder.append(ts::kStencil_done);
  auto unit = builder.emit(**heap, "no room");
  ASSERT_FALSE(static_cast<bool>(unit));
  bool out_of_memory = false;
  llvm::handleAllErrors(unit.takeError(), [&](const HeapError& e) {
    out_of_memory = e.code() == ErrorCode::kOutOfMemory;
  });
  EXPECT_TRUE(out_of_memory);
  EXPECT_EQ(stats_without_counters(**heap), before);
}

TEST_F(StencilTest, PerfMapNamesEveryInstance) {
  CodeUnitBuilder builder(ts::library(), *helpers_, /*perf_map=*/true);
  builder.append(ts::kStencil_done);
  EmittedUnit unit = emit(builder, "perf-unit");
  ASSERT_NE(unit.code, 0u);
  const std::string path = "/tmp/perf-" + std::to_string(::getpid()) + ".map";
  std::stringstream contents;
  contents << std::ifstream(path).rdbuf();
  std::remove(path.c_str());
  std::ostringstream line;
  line << std::hex << unit.code << " " << unit.code_size << " perf-unit:done\n";
  EXPECT_THAT(contents.str(), HasSubstr(line.str()));
  EXPECT_FALSE(static_cast<bool>(retire_unit(*heap_, unit)));
}

// stencil_tool on objects it must refuse: exit status 1, a message naming stencil,
// relocation and target.
TEST(StencilTool, RefusesRelocationsItCannotPlace) {
  const char* root = std::getenv("TEST_SRCDIR");
  ASSERT_NE(root, nullptr);
  const std::string runfiles = std::string(root) + "/codeheap/";
  const std::string out = std::getenv("TEST_TMPDIR") + std::string("/bad_stencils");
  struct Case {
    const char* object;
    const char* message;
  };
  for (const Case& c :
       {Case{"bad_data_stencil.o",
             "stencil 'bad_data': relocation R_X86_64_PC32 against 'counter' cannot be placed"},
        Case{"bad_tls_stencil.o",
             "stencil 'bad_tls': relocation R_X86_64_GOTTPOFF against 'tls_counter' cannot be "
             "placed (thread-local storage)"},
        Case{"bad_call_stencil.o",
             "stencil 'bad_call': relocation R_X86_64_PLT32 against '.text.helper' cannot be "
             "placed"}}) {
    const std::string command = runfiles + "jit/stencil_tool --library=//tests:bad " +
                                "--namespace=bad --header=bad.h " + runfiles + "tests/" + c.object +
                                " " + out + ".h " + out + ".cc 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buffer[512];
    while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
    const int status = ::pclose(pipe);
    ASSERT_TRUE(WIFEXITED(status)) << c.object;
    EXPECT_EQ(WEXITSTATUS(status), 1) << c.object;
    EXPECT_THAT(output, HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace codeheap::jit
