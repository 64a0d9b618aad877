#!/usr/bin/env python3
"""Turns the results bench/run.sh collects into one table of ratios and docs/benchmarks.md.

    report.py --results DIR --output FILE [--compile-flags FLAGS]

DIR holds what run.sh wrote:
    <binary>.json          Google Benchmark JSON of each benchmark binary (repetitions with
                           aggregates, or single runs);
    strace/<slug>@<N>.txt  `strace -c` summaries of fixed-iteration runs of N operations, one
                           with N = 0 (same setup and warm-up) per workload; <slug> is the
                           workload name with '/' replaced by '~';
    fixed/<slug>.json      the JSON line a fixed-iteration run printed (peak RSS, maps lines).
Missing strace/ or fixed/ results show as "not measured" (the smoke test runs without them); a
benchmark missing from the JSON is an error, so renaming one cannot silently empty a row.

Times are CPU time (median over repetitions): the machines are shared, and CPU time moves less
than wall time when other builds compete for the two cores. Every row compares against a
baseline from the same run.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import subprocess
import sys

BINARIES = [
    "memory_manager_bench",
    "end_to_end_bench",
    "fragmentation_bench",
    "hot_swap_bench",
    "gc_churn_bench",
]

# System calls counted under strace; the target is about the first three.
TARGET_SYSCALLS = ("mmap", "mprotect", "munmap")
TRACED_SYSCALLS = TARGET_SYSCALLS + ("madvise", "fallocate")

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


class MissingBenchmark(Exception):
    pass


class Results:
    """Google Benchmark runs by name, plus the strace and fixed-iteration results."""

    def __init__(self, directory):
        self.directory = directory
        self.runs = {}  # run name -> the median aggregate, or the only iteration run
        self.contexts = {}  # binary -> Google Benchmark context
        for binary in BINARIES:
            path = os.path.join(directory, binary + ".json")
            with open(path) as f:
                data = json.load(f)
            self.contexts[binary] = data["context"]
            for run in data["benchmarks"]:
                name = run["run_name"]
                if run["run_type"] == "aggregate" and run["aggregate_name"] == "median":
                    self.runs[name] = run
                elif run["run_type"] == "iteration" and run.get("repetitions", 1) == 1:
                    self.runs.setdefault(name, run)
        self.used = set()

    def run(self, name):
        """The run of benchmark `name` (one run with Iterations(n) carries suffixes)."""
        for run_name, run in self.runs.items():
            if run_name == name or run_name.startswith(name + "/"):
                self.used.add(name)
                return run
        raise MissingBenchmark(name)

    def cpu_ns(self, name):
        run = self.run(name)
        return run["cpu_time"] * UNIT_NS[run["time_unit"]]

    def counter(self, name, counter):
        run = self.run(name)
        if counter not in run:
            raise MissingBenchmark(f"{name} (counter {counter})")
        return run[counter]

    def syscalls_per_op(self, workload):
        """(mmap+mprotect+munmap per operation, other traced calls per operation) or None."""
        slug = workload.replace("/", "~")
        runs = {}
        for path in glob.glob(os.path.join(self.directory, "strace", slug + "@*.txt")):
            iterations = int(re.search(r"@(\d+)\.txt$", path).group(1))
            runs[iterations] = parse_strace(path)
        if 0 not in runs or len(runs) != 2:
            return None
        n = max(runs)
        extra = {call: runs[n].get(call, 0) - runs[0].get(call, 0) for call in TRACED_SYSCALLS}
        target = sum(extra[call] for call in TARGET_SYSCALLS)
        other = sum(extra.values()) - target
        return target / n, other / n, extra, n

    def fixed(self, workload):
        path = os.path.join(self.directory, "fixed", workload.replace("/", "~") + ".json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.loads(f.read())


def parse_strace(path):
    """Calls per system call from a `strace -c` summary table."""
    calls = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall"
            if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]) and fields[-1] != "total":
                calls[fields[-1]] = int(fields[3])
    return calls


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_bytes(n):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


class Row:
    def __init__(self, area, metric, ours, baseline, ratio="—", target="—", result="—"):
        self.cells = [area, metric, ours, baseline, ratio, target, result]


def speed_row(results, area, metric, ours, baseline, baseline_label, minimum=None, rate=None):
    """Times of benchmarks `ours` and `baseline`; ratio = baseline time / our time. `rate` names
    the operation to show as a rate too ("closures" -> "513 closures/s")."""
    ours_ns, base_ns = results.cpu_ns(ours), results.cpu_ns(baseline)
    shown = fmt_time(ours_ns) + (f" ({1e9 / ours_ns:,.0f} {rate}/s)" if rate else "")
    speedup = base_ns / ours_ns
    ratio = f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"
    target, result = "—", "—"
    if minimum is not None:
        target = f"≥ {minimum:g}× faster" if minimum > 1 else "not slower"
        result = "PASS" if speedup >= minimum else "MISS"
    return Row(area, metric, shown, f"{baseline_label}: {fmt_time(base_ns)}", ratio, target, result)


def paired_row(results, area, metric, name, baseline_label, minimum):
    """A benchmark that times ours and the baseline in alternation (harness.h's Alternating:
    counters ours_us and stock_us per operation, and speedup = baseline time / our time; medians
    over the repetitions)."""
    ours_ns = results.counter(name, "ours_us") * 1e3
    base_ns = results.counter(name, "stock_us") * 1e3
    speedup = results.counter(name, "speedup")
    ratio = f"{speedup:.3f}× faster" if speedup >= 1 else f"{1 / speedup:.3f}× slower"
    target = f"≥ {minimum:g}× faster" if minimum > 1 else "not slower"
    return Row(area, metric, fmt_time(ours_ns), f"{baseline_label}: {fmt_time(base_ns)}", ratio,
               target, "PASS" if speedup >= minimum else "MISS")


def floor_row(results, area, metric, ours, floor):
    """How much of our time is `floor`, work that no bookkeeping change can remove."""
    ours_ns, floor_ns = results.cpu_ns(ours), results.cpu_ns(floor)
    return Row(area, metric, fmt_time(ours_ns), f"copy + trap-fill alone: {fmt_time(floor_ns)}",
               f"{floor_ns / ours_ns:.0%} of ours")


def syscall_row(results, area, metric, ours, baseline, baseline_label, require_zero):
    mine, theirs = results.syscalls_per_op(ours), results.syscalls_per_op(baseline)
    if mine is None or theirs is None:
        return Row(area, metric, "not measured", baseline_label)

    def show(counts):
        per_op, other, _, _ = counts
        text = f"{per_op:.2f}/op"
        return text + (f" (+{other:.2f} madvise/fallocate)" if other else "")

    target, result = "—", "—"
    if require_zero:
        # Steady state: fewer than one call per 100 operations counts as none (a stray mmap of
        # the C library's malloc is not the manager's).
        target = "0/op"
        result = "PASS" if mine[0] < 0.01 else "MISS"
    return Row(area, metric, show(mine), f"{baseline_label}: {show(theirs)}", "—", target, result)


def rows(results):
    out = []
    A = "1 Allocation"
    for shape, label in (("small", "256 B code + 64 B ro"), ("mixed16k", "16 KiB mixed")):
        ours = f"jitlink/{shape}/codeheap"
        out.append(speed_row(results, A, f"JITLink alloc+finalize+dealloc, {label}", ours,
                             f"jitlink/{shape}/InProcessMemoryManager", "InProcessMemoryManager",
                             minimum=20))
        out.append(paired_row(results, A, f"same, {label}, alternating with InProcessMemoryManager",
                              f"jitlink/{shape}/alternating", "InProcessMemoryManager", minimum=20))
        out.append(speed_row(results, A, f"JITLink alloc+finalize+dealloc, {label}", ours,
                             f"jitlink/{shape}/MapperJITLinkMemoryManager", "Mapper+InProcessMemoryMapper"))
        out.append(floor_row(results, A, f"JITLink, {label}: share that is copying and trap-filling",
                             ours, f"jitlink/{shape}/copy_floor"))
        for clear, what in (("all", "clear segment, apply"), ("gaps", "apply, clear gaps")):
            out.append(paired_row(results, A, f"JITLink layout step, {label}: lay_out+place, "
                                  f"alternating with BasicLayout ({what})",
                                  f"layout/{shape}/alternating_clear_{clear}", "BasicLayout",
                                  minimum=1.0))
    out.append(speed_row(results, A, "RuntimeDyld sections+finalize+destroy, 256 B + 64 B",
                         "rtdyld/small/codeheap", "rtdyld/small/SectionMemoryManager",
                         "SectionMemoryManager"))
    for shape, label in (("small", "256 B + 64 B"), ("mixed16k", "16 KiB mixed")):
        ours = f"jitlink/{shape}/codeheap"
        out.append(syscall_row(results, A, f"mmap+mprotect+munmap, JITLink {label}", ours,
                               f"jitlink/{shape}/InProcessMemoryManager", "InProcessMemoryManager",
                               require_zero=True))
        out.append(syscall_row(results, A, f"mmap+mprotect+munmap, JITLink {label}", ours,
                               f"jitlink/{shape}/MapperJITLinkMemoryManager", "Mapper",
                               require_zero=True))
    out.append(syscall_row(results, A, "mmap+mprotect+munmap, RuntimeDyld 256 B + 64 B",
                           "rtdyld/small/codeheap", "rtdyld/small/SectionMemoryManager",
                           "SectionMemoryManager", require_zero=True))

    E = "2 End to end"
    out.append(paired_row(results, E, "add+lookup+call+remove tiny module: Engine, alternating "
                          "with stock LLJIT", "e2e/paired/engine", "stock LLJIT", minimum=1.0))
    out.append(paired_row(results, E, "same: stock LLJIT with only HeapJITLinkMemoryManager, "
                          "alternating", "e2e/paired/lljit_codeheap", "stock LLJIT", minimum=1.0))
    out.append(speed_row(results, E, "add+lookup+call+remove tiny module: Engine, measured apart",
                         "e2e/engine", "e2e/stock_lljit", "stock LLJIT"))
    out.append(speed_row(results, E, "same: stock LLJIT with only HeapJITLinkMemoryManager, apart",
                         "e2e/lljit_codeheap", "e2e/stock_lljit", "stock LLJIT"))
    out.append(syscall_row(results, E, "mmap+mprotect+munmap per cycle: Engine", "e2e/engine",
                           "e2e/stock_lljit", "stock LLJIT", require_zero=False))
    ours, stock = results.fixed("e2e/engine"), results.fixed("e2e/stock_lljit")
    if ours and stock:
        cycles = f"{ours['iterations']:,}"
        out.append(Row(E, f"peak RSS after {cycles} cycles: Engine",
                       fmt_bytes(ours["peak_rss_kib"] * 1024),
                       f"stock LLJIT: {fmt_bytes(stock['peak_rss_kib'] * 1024)}",
                       f"{ours['peak_rss_kib'] / stock['peak_rss_kib']:.2f} (ours/stock)"))
        out.append(Row(E, f"/proc/self/maps lines after {cycles} cycles: Engine",
                       str(ours["maps_lines"]), f"stock LLJIT: {stock['maps_lines']}",
                       f"{ours['maps_lines'] / stock['maps_lines']:.2f} (ours/stock)"))
    else:
        out.append(Row(E, "peak RSS and /proc/self/maps lines after the long run", "not measured",
                       "stock LLJIT"))

    F = "3 Fragmentation"
    name = "fragmentation/codeheap"
    committed, live = (results.counter(name, "peak_committed_bytes"),
                       results.counter(name, "peak_live_bytes"))
    ops = results.counter(name, "operations")
    out.append(Row(F, f"peak committed / peak live bytes, {ops:,.0f} random ops",
                   f"committed {fmt_bytes(committed)}", f"live {fmt_bytes(live)}",
                   f"{committed / live:.3f}", "≤ 1.25", "PASS" if committed / live <= 1.25 else "MISS"))
    free = results.counter(name, "free_bytes_below_top")
    ratio = results.counter(name, "largest_free_over_free")
    out.append(Row(F, "largest free span / free bytes below the top block, at the end",
                   f"largest {fmt_bytes(free * ratio)}", f"free {fmt_bytes(free)}",
                   f"{ratio:.3f}"))

    H = "4 Hot-swap"
    out.append(speed_row(results, H, "redefine without codegen: EntryCell::set_target + dealloc old body",
                         "swap/entry_cell", "swap/orc_stubs", "ORC stub updatePointer + InProcessMemoryManager"))
    out.append(speed_row(results, H, "redefine with codegen: Engine::define_function",
                         "redefine/engine", "redefine/stock_lljit", "stock LLJIT + ORC stub"))
    for path, label in (("entry_cell", "entry cell"), ("orc_stub", "ORC stub (LLVM)")):
        via, direct = results.cpu_ns(f"call/{path}"), results.cpu_ns("call/direct")
        out.append(Row(H, f"call of tiny JIT function through {label}", fmt_time(via),
                       f"direct call: {fmt_time(direct)}",
                       f"{via - direct:+.2f} ns/call ({via / direct:.2f}×)"))

    G = "5 GC churn"
    out.append(speed_row(results, G, "closure compiled, called, collected: gc::Runtime",
                         "churn/runtime", "churn/stock_lljit", "stock LLJIT add+call+remove",
                         rate="closures"))
    name = "churn/runtime"
    reclaimed = results.counter(name, "reclaimed_bytes_per_collection")
    left = results.counter(name, "quarantined_bytes_after_collection")
    per = results.counter(name, "finalized_per_collection")
    out.append(Row(G, f"JIT bytes (code, constants, data) reclaimed per collection, "
                      f"{per:.0f} code objects finalized",
                   fmt_bytes(reclaimed), f"quarantined: {fmt_bytes(reclaimed + left)}",
                   f"{reclaimed / (reclaimed + left):.2f} reclaimed" if reclaimed + left else "—"))
    pass_ns, collect_ns = (results.counter(name, "reclaim_pass_ns"),
                           results.counter(name, "collect_ns"))
    out.append(Row(G, "reclamation pass (stack scan + Heap::reclaim) per collection",
                   fmt_time(pass_ns), f"whole collect(): {fmt_time(collect_ns)}",
                   f"{pass_ns / collect_ns:.2f} of collect()"))
    return out


def markdown_table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def plain_table(header, body):
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def command_output(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(results, compile_flags):
    meminfo = open("/proc/meminfo").read()
    cpuinfo = open("/proc/cpuinfo").read()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    loads = [f"{c['load_avg'][0]:.2f}" for c in results.contexts.values()]
    package = lambda p: command_output(["dpkg-query", "-W", "-f=${Version}", p])
    return [
        ("Date (start of the run)", datetime.datetime.fromisoformat(
            results.contexts[BINARIES[0]]["date"]).strftime("%Y-%m-%d %H:%M %Z")),
        ("CPU", model.group(1) if model else platform.processor()),
        ("Cores", f"{os.cpu_count()} (shared with other engineers' builds)"),
        ("Memory", fmt_bytes(int(re.search(r"MemTotal:\s*(\d+) kB", meminfo).group(1)) * 1024)),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        ("LLVM", command_output(["/usr/lib/llvm-19/bin/llvm-config", "--version"])),
        ("Compiler", command_output(["g++", "--version"]).splitlines()[0]),
        ("Build", f"`./bazelw build --config=opt`; effective flags, last wins: `{compile_flags}`"),
        ("Libraries", f"Google Benchmark {package('libbenchmark-dev')}, Boehm GC {package('libgc-dev')}"),
        ("Load average (1 min) at the start of each binary", ", ".join(loads)),
    ]


NOTES = """\
- **Times** are CPU time of the benchmark thread (of the whole process for GC churn, where Boehm's
  marker threads work too), median of the repetitions (run in random order across each binary's
  benchmarks, so ours and the baseline share the machine's spells of load); wall times are in the
  details below. Ratios compare against the baseline measured in the same run. "× faster" is
  baseline time / our time.
- **Our managers' reclaim cost is included.** Our JITLink and RuntimeDyld managers, the engine and
  the swaps retire code to the heap's quarantine; the benchmarks run `Heap::reclaim` every 64
  deallocations (module removals, swaps) with a predicate that finds nothing referenced, inside the
  timed loop, so each operation carries 1/64 of a pass.
- **Identical requests.** The JITLink rows link the same minimal LinkGraph (one content block per
  section) through every manager: built once, and before each allocation its blocks are pointed
  back at their original content and address 0 (a few stores, timed alike for all three), so the
  graph is in cache, as it is when JITLink calls a manager right after its passes. Layout, the
  copy of block content into the allocation, finalization and deallocation are timed; graph
  construction is not, as it is the same for all three. The RuntimeDyld rows make the calls
  RuntimeDyld makes (`reserveAllocationSpace` when asked for, two sections, `finalizeMemory`,
  destruction), without `notifyObjectLoaded`, which needs a loaded object.
- **Copy + trap-fill alone** (`copy_floor`): what every JITLink allocation through our manager
  must move, with no bookkeeping: the section content copied into place (every manager copies
  it) and, at reclaim, freed code filled with trap bytes (our safety invariant), into a ring as
  large as the quarantine between two passes. The rest of our time is the heap's and the
  manager's bookkeeping, LLVM's per-link plumbing and the cache misses the copying causes.
- **Allocation, alternating**: the baseline's time is mostly mmap, mprotect, munmap and page
  faults, whose cost moves with the host's other tenants: between two runs of the same binary
  InProcessMemoryManager's 16 KiB median has moved from 23 to 33 µs, which moves the ratio by
  more than its distance to the target. So each shape is also measured in alternation within
  one benchmark: per round, 64 operations of ours (one reclaim period), then 4 of
  InProcessMemoryManager, each side timed on the thread's CPU clock; the ratio of the two sums
  per repetition, median over repetitions. Each side starts its turn in the caches (and TLB)
  the other left, so both are usually slower than apart: a cross-check that a verdict is not
  drift, with the same target.
- **End to end, alternating**: a cycle (parse, compile, link, look up, call, remove) is ~1 ms of
  LLVM code generation that both JITs share; the memory manager is a few percent of it, less
  than this machine drifts between two benchmarks measured one after the other (repetitions vary
  by ~13%). So the target is judged on a benchmark that runs our JIT and stock LLJIT in
  alternation, one cycle each, each timed on the thread's CPU clock: a spell of load hits both
  halves of a pair. The ratio is that of the two sums per repetition, its median over the
  repetitions shown. The rows "measured apart" are the separate benchmarks' medians.
- **System calls** per operation: `strace -c -f -e trace=mmap,mprotect,munmap,madvise,fallocate` over
  a fixed-iteration run (`--run=NAME --iterations=N --warmup=W`), minus a run of the same setup and
  warm-up with N = 0, divided by N.
- **Fragmentation**: the code arena of a default `Heap`; a table of slots, each operation picks one
  and allocates into it (size log-uniform over 64 B–64 KiB, alignment 16) or frees it with
  `Heap::release` (release + periodic reclaim: a pass every 256 releases). Committed bytes peak
  just before a pass; they are sampled there, so the peak is exact. "Below the top block" leaves
  out the never-touched top of the arena, one free span as large as the rest of the arena.
- **Hot-swap without codegen**: the new body (256 B code + 64 B constants) is linked untimed; the
  timed step is pointing the function at it plus deallocating the previous body through the same
  manager type that linked it (ours: quarantine; LLVM: munmap).
- **GC churn**: a full `Runtime::collect()` (Boehm collection, finalizers, module retirement, stack
  scan, reclaim) every 100 closures, timed with them.
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--compile-flags", default="not recorded")
    args = parser.parse_args()

    results = Results(args.results)
    try:
        table = rows(results)
    except MissingBenchmark as missing:
        sys.exit(f"report.py: benchmark missing from the results: {missing}")

    header = ["Area", "Metric", "Ours", "Baseline", "Ratio", "Target", "Result"]
    body = [row.cells for row in table]
    print(plain_table(header, body))

    details = []
    for name in sorted(results.used):
        run = results.run(name)
        scale = UNIT_NS[run["time_unit"]]
        details.append([f"`{name}`", fmt_time(run["cpu_time"] * scale),
                        fmt_time(run["real_time"] * scale)])
    doc = [
        "<!-- Generated by bench/run.sh (bench/report.py). Do not edit by hand: re-run bench/run.sh. -->",
        "# Benchmarks",
        "",
        "Generated by `bench/run.sh` (issue 6); do not edit by hand. Each row compares one of our "
        "components with its LLVM (or ideal) baseline, measured in the same run.",
        "",
        "## Machine",
        "",
        markdown_table(["", ""], machine(results, args.compile_flags)),
        "",
        "## Results",
        "",
        markdown_table(header, body),
        "",
        "## How it was measured",
        "",
        NOTES,
        "## Details",
        "",
        "CPU and wall time per operation (median). Wall time well above CPU time means other "
        "work competed for the cores during the run.",
        "",
        markdown_table(["Benchmark", "CPU", "Wall"], details),
        "",
    ]
    with open(args.output, "w") as f:
        f.write("\n".join(doc))


if __name__ == "__main__":
    main()
