// CODEHEAP_STATS, CODEHEAP_MAP: heap-stats dumps and heap maps without touching the program.
//
//   CODEHEAP_STATS=stderr          text dumps on stderr
//   CODEHEAP_STATS=/tmp/heap.json  JSON Lines appended to the file (path ends in .json or .jsonl):
//                                  one object per dump, the format_json fields plus "event"
//                                  ("exit" or "destroy") and "pid"
//   CODEHEAP_STATS=/tmp/heap.txt   text dumps appended to the file (any other path)
//
//   CODEHEAP_MAP=/tmp/heap.svg     the heap map (Heap::dump_svg), replacing the file's content
//                                  at each dump: with several heaps, the last one dumped wins
//
// A heap created while either variable is set is dumped when it is destroyed and, if it is
// still alive then, when the process exits through exit() or a return from main (not _exit,
// not a crash). A file that cannot be written is logged at warn. See docs/heap-stats.md.
#pragma once

namespace codeheap {

class Heap;

namespace stats_dump {

// Called by Heap::create: reads CODEHEAP_STATS and CODEHEAP_MAP and, if set, watches the heap.
void on_create(const Heap& heap);
// Called by Heap::~Heap while the heap still works: writes its final dump if it is watched.
void on_destroy(const Heap& heap);

}  // namespace stats_dump
}  // namespace codeheap
