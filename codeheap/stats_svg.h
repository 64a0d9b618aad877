// The heap map: a picture of a heap as SVG (Heap::dump_svg, CODEHEAP_MAP; docs/heap-stats.md).
//
// Each arena is a strip in address order, wrapped into rows of one width, at one scale for the
// whole heap (a power of two of bytes per pixel, chosen so that what the heap has used, blocks
// and committed pages, fills about a screen). The free, uncommitted top of an arena beyond that
// is one collapsed row, labelled with its size. Blocks are coloured by state: live (one colour
// per owner, its name in a <title> tooltip), quarantined, free (the gaps between blocks, which
// are exactly the free list's spans). A thin band above each row shows which pages are
// committed and which are only reserved. A legend carries the dump's headline numbers.
//
// Up to SvgOptions::max_single_items blocks and free spans are drawn one by one. Beyond that,
// every run of two or more neighbours each narrower than one pixel becomes an aggregate: a
// stack of up to three rects over the run's range, one per state present, each as tall as its
// share of the run's bytes, carrying how many blocks of that state it stands for. Wider blocks
// are still drawn one by one; if that alone would take more than max_single_items rects, the
// width under which blocks are aggregated doubles (2, 4, ... pixels) until it does not. So the
// file stays small (about 200 bytes per rect: under 1 MB for the fragmentation benchmark's
// final state) while every block stays counted. The root's data-aggregate-below says the
// width in bytes (0: nothing aggregated).
//
// For tools: every drawn piece is a <rect> with data-state ("live", "quarantined" or "free")
// inside the <g data-arena="NAME"> of its arena (aggregates also have class="aggregate"). The
// first piece of a block or aggregate has data-blocks and data-bytes (a block or run that wraps
// to the next row continues in pieces without them), so summing them per state and arena gives
// the dump's live_blocks, quarantined_blocks, free_blocks and used, quarantined and free bytes.
// Inside an arena's strip, x and width are in bytes from the row's start (the group scales
// them to pixels), except for the collapsed row, whose rect has data-collapsed (the bytes it
// stands for) instead; committed pages are rects with data-kind="committed".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "codeheap/error.h"
#include "codeheap/stats.h"

namespace codeheap {

// What the map draws, taken in one snapshot (Heap::map).
struct HeapMap {
  struct Block {
    uintptr_t begin = 0;
    size_t footprint = 0;
    uint64_t owner = 0;  // 0: none
    bool quarantined = false;
  };
  // Committed pages [begin, end).
  struct Range {
    uintptr_t begin = 0;
    uintptr_t end = 0;
  };
  struct Arena {
    std::vector<Block> blocks;     // in address order; the gaps between them are free
    std::vector<Range> committed;  // in address order, maximal
  };

  HeapStats stats;            // the dump's numbers; owners name the blocks
  std::vector<Arena> arenas;  // indexed like stats.arenas
};

struct SvgOptions {
  int width = 1200;  // of the picture, in pixels
  // Blocks and free spans (all arenas together) drawn one by one, at most; beyond that,
  // narrow neighbours are aggregated, and the map keeps to about this many block rects.
  size_t max_single_items = 3000;
};

std::string format_svg(const HeapMap& map, const SvgOptions& options = {});

// Writes `text` to `path` (created or truncated). Errors: kInvalidArgument for an empty path,
// kSystemError naming the path and the OS's reason.
Result<void> write_text_file(const std::string& path, std::string_view text);

}  // namespace codeheap
