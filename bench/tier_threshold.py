#!/usr/bin/env python3
"""How the tier-up threshold was chosen (docs/tiers.md): runs bench/lisp/{fib,tak,nqueens}.scm
with --tier-up N for several N and with 0 (LLVM at once), the runs of one round alternating, and
prints the median time per repetition and its ratio to LLVM-only, plus the startup-to-exit time
of every program in examples/lisp/programs/.

    bench/tier_threshold.py --lisp bazel-bin/examples/lisp/lisp [--rounds 5] [--thresholds ...]
"""
import argparse
import pathlib
import statistics
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def measure(lisp, mode, program):
    out = subprocess.run([lisp, "--tier-up", mode, str(program)], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("measure "):
            _, _, reps, ns, _ = line.split()
            return int(ns) / int(reps) / 1e6
    raise RuntimeError(f"{program} printed no measure line")


def startup(lisp, mode, program):
    start = time.monotonic()
    subprocess.run([lisp, "--tier-up", mode, str(program)], check=True,
                   stdout=subprocess.DEVNULL)
    return (time.monotonic() - start) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lisp", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--thresholds", nargs="+", default=["100", "300", "1000", "3000"])
    args = parser.parse_args()
    modes = args.thresholds + ["0"]
    benches = ["fib", "tak", "nqueens"]
    times = {(b, m): [] for b in benches for m in modes}
    programs = sorted((ROOT / "examples/lisp/programs").glob("*.scm"))
    starts = {(p.stem, m): [] for p in programs for m in modes}
    for _ in range(args.rounds):
        for bench in benches:
            for mode in modes:
                times[bench, mode].append(measure(args.lisp, mode, ROOT / f"bench/lisp/{bench}.scm"))
        for program in programs:
            for mode in modes:
                starts[program.stem, mode].append(startup(args.lisp, mode, program))

    print("| ms per repetition (median of %d) | %s |" % (args.rounds, " | ".join(
        f"--tier-up {m}" for m in modes)))
    print("|" + " --- |" * (len(modes) + 1))
    for bench in benches:
        base = statistics.median(times[bench, "0"])
        cells = []
        for mode in modes:
            t = statistics.median(times[bench, mode])
            cells.append(f"{t:.3f} ({t / base:.2f}x)")
        print(f"| {bench} | " + " | ".join(cells) + " |")
    print()
    print("| startup to exit, ms (median) | %s |" % " | ".join(f"--tier-up {m}" for m in modes))
    print("|" + " --- |" * (len(modes) + 1))
    for program in programs:
        cells = [f"{statistics.median(starts[program.stem, m]):.0f}" for m in modes]
        print(f"| {program.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
