#!/usr/bin/env python3
"""Runs bench/lisp/ in our Lisp (per tier mode), Chez Scheme, SBCL and Guile; prints tables.

    lisp_compare.py --lisp PATH/TO/lisp [--runs 5] [--quick] [--write [FILE]] [--json FILE]

Every program times itself in-process (ours with (current-time-ns), Chez with
(current-time 'time-monotonic), SBCL with CLOCK_MONOTONIC, Guile with get-internal-real-time),
after its own code is compiled, and prints one line per measurement:

    measure NAME N NANOSECONDS RESULT      (N units of work: repetitions, lambdas, redefinitions)
    stat KEY VALUE                         (ours: peak-code-committed, sampled off the clock)

The systems alternate run by run (ours never, ours 0, ours default, Chez, SBCL, Guile, then
again), and every ratio is the median of per-run ratios against the Chez run (or the ours-`0`
run) of the same round. Peak RSS is measured by GNU time (/usr/bin/time -f %M). Startup rows
are the wall time of whole processes running examples/lisp/programs/*.scm (ours only, output
checked against the .expected files). Standard library only.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROGRAMS = os.path.join(HERE, "lisp")
STARTUP_PROGRAMS = os.path.join(ROOT, "examples", "lisp", "programs")
DOC = os.path.join(ROOT, "docs", "lisp-benchmarks.md")
TIMEOUT = 3600  # seconds per process: 50,000 lambdas through LLVM take minutes
GNU_TIME = "/usr/bin/time"
TIERS = ["never", "0", "default"]
OTHERS = ["chez", "sbcl", "guile"]
LABEL = {"never": "ours never", "0": "ours 0", "default": "ours default",
         "chez": "Chez", "sbcl": "SBCL", "guile": "Guile"}
# Guile 3.0.8 aborts ("Too many root sets") after loading ~1,500 compiled objects, and its
# compiler takes milliseconds a lambda: its churn and redefinition runs are capped at this many.
GUILE_CAP = 1000
# Ours with --tier-up 0 compiles every lambda through LLVM (milliseconds each): its churn and
# redefinition runs stop here too, which keeps a full comparison within about ten minutes.
LLVM_CAP = 2000


def triangle(p):
    return str(p["n"] * (p["n"] + 1) // 2)


# key, program, label, unit of N, parameters, expected result
def workloads(args):
    churn_sizes = [int(x) for x in args.churn.split(",")]
    rows = []
    for n in churn_sizes:
        rows.append(("churn-%d" % n, "churn", "churn: eval %s distinct lambdas" % f"{n:,}",
                     "lambda", {"n": n, "every": args.every, "sample": args.sample}, triangle))
    rows.append(("redefine", "redefine",
                 "redefinition seen by a compiled caller (%s)" % f"{args.redefine:,}",
                 "redefinition", {"n": args.redefine}, triangle))
    rows.append(("fib", "fib", "fib(30)", "run", {"reps": args.fib}, lambda p: "832040"))
    rows.append(("tak", "tak", "tak(18 12 6)", "run", {"reps": args.tak}, lambda p: "7"))
    rows.append(("nqueens", "nqueens", "nqueens(8), all 92 solutions", "run",
                 {"reps": args.nqueens}, lambda p: "92"))
    only = args.workloads.split(",")
    return [row for row in rows if row[1] in only]


class Failure(Exception):
    pass


def run(command, cwd, env=None, stdin=None, peak_rss=False):
    """(stdout, wall seconds, peak RSS in KiB or None) of a command that must exit 0.

    The peak RSS comes from GNU time (`-f %M`), which forks the command from its own small
    process: the ru_maxrss that wait4 reports to us would include this Python process's own
    high-water mark, which Linux carries over into a child at exec.
    """
    with tempfile.TemporaryDirectory() as scratch:
        out_path, err_path = os.path.join(scratch, "out"), os.path.join(scratch, "err")
        rss_path = os.path.join(scratch, "rss")
        if peak_rss:
            command = [GNU_TIME, "-f", "%M", "-o", rss_path] + command
        with open(out_path, "w") as out, open(err_path, "w") as err:
            start = time.perf_counter()
            try:
                feed = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
                proc = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=err,
                                      text=True, timeout=TIMEOUT, **feed)
            except subprocess.TimeoutExpired:
                raise Failure("%s timed out after %d s" % (" ".join(command), TIMEOUT))
            elapsed = time.perf_counter() - start
        stdout, stderr = open(out_path).read(), open(err_path).read()
        rss = None
        if peak_rss and proc.returncode == 0:
            rss = int(open(rss_path).read().split()[-1])
    if proc.returncode != 0:
        raise Failure("%s failed (exit %d):\n%s%s" % (" ".join(command), proc.returncode,
                                                     stdout[-1500:], stderr[-1500:]))
    return stdout, elapsed, rss


def parse(stdout):
    measures, stats = {}, {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "measure":
            measures[parts[1]] = (int(parts[2]), int(parts[3]), parts[4])
        elif len(parts) == 3 and parts[0] == "stat":
            stats[parts[1]] = int(parts[2])
    return measures, stats


def substitute(text, params, lisp):
    """Sets each (define NAME 123) (Scheme) or (defparameter *NAME* 123) (SBCL) to params[NAME]."""
    for name, value in params.items():
        pattern = (r"^\(defparameter \*%s\* \d+\)" if lisp else r"^\(define %s \d+\)") % name
        # A program may not use every parameter (only ours samples the heap, say).
        text = re.sub(pattern, lambda m: re.sub(r"\d+\)$", "%d)" % value, m.group(0)), text,
                      flags=re.M)
    return text


class Systems:
    """Prepares (untimed: substitution, compile-program, compile-file) and runs each system."""

    def __init__(self, lisp, tier_flag, tmpdir):
        self.lisp, self.tier_flag, self.tmpdir = lisp, tier_flag, tmpdir
        self.env = {k: v for k, v in os.environ.items() if k != "LISP_TIER_UP"}
        self.guile_env = dict(self.env, GUILE_AUTO_COMPILE="0")
        self.prepared = {}

    def ours_command(self, tier, path):
        return [self.lisp] + (["--tier-up", tier] if self.tier_flag and tier != "default"
                              else []) + [path]

    def prepare(self, key, program, system, params):
        """The command that runs `program` with `params` on `system` (cached per key)."""
        if (key, system) in self.prepared:
            return self.prepared[key, system]
        d = os.path.join(self.tmpdir, key)
        if not os.path.isdir(d):
            os.makedirs(d)
            for name in os.listdir(PROGRAMS):
                source = open(os.path.join(PROGRAMS, name)).read()
                with open(os.path.join(d, name), "w") as f:
                    f.write(substitute(source, params, name.endswith(".lisp")))
        if system in TIERS:
            command = ["ours", os.path.join(d, program + ".scm")]
        elif system == "chez":
            so = os.path.join(d, program + "-chez.so")
            run(["scheme", "-q"], d, self.env,
                stdin='(compile-program "%s-chez.ss" "%s")\n' % (program, so))
            if not os.path.exists(so):
                raise Failure("Chez could not compile %s-chez.ss" % program)
            command = ["scheme", "--program", so]
        elif system == "sbcl":
            command = ["sbcl", "--noinform", "--non-interactive", "--no-sysinit",
                       "--no-userinit", "--load", program + ".lisp"]
        else:
            go = os.path.join(d, program + ".go")
            run(["guile", "-c", '(compile-file "%s-guile.scm" #:output-file "%s")'
                 % (program, go)], d, self.guile_env)
            command = ["guile", "-c", '(load-compiled "%s")' % go]
        self.prepared[key, system] = (command, d)
        return command, d

    def measure(self, key, program, system, params):
        """{n, ns, result, stats, rss_kib, wall}: one run of a self-timing program."""
        command, d = self.prepare(key, program, system, params)
        if command[0] == "ours":
            command = self.ours_command(system, command[1])
        stdout, wall, rss = run(command, d, self.guile_env if system == "guile" else self.env,
                                peak_rss=True)
        measures, stats = parse(stdout)
        if program not in measures:
            raise Failure("%s printed no 'measure %s' line:\n%s" % (" ".join(command), program,
                                                                   stdout[-1500:]))
        n, ns, result = measures[program]
        return {"n": n, "ns": ns, "result": result, "stats": stats, "rss_kib": rss, "wall": wall}

    def startup(self, tier, path):
        stdout, wall, rss = run(self.ours_command(tier, path), self.tmpdir, self.env)
        return stdout, wall


def supports_tier_flag(lisp, tmpdir):
    empty = os.path.join(tmpdir, "empty.scm")
    open(empty, "w").close()
    proc = subprocess.run([lisp, "--tier-up", "never", empty], capture_output=True)
    return proc.returncode == 0


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio_of_runs(a, b):
    """Median over rounds of a[i]/b[i], rounds where both ran."""
    return median([x / y if x is not None and y else None for x, y in zip(a, b)])


def fmt_ns(ns):
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            v = ns / scale
            return ("%.3g %s" if v < 100 else "%.0f %s") % (v, unit)
    return "%.0f ns" % ns


def fmt_ratio(r):
    return "-" if r is None else "%.2f" % r


def fmt_bytes(b):
    if b is None:
        return "-"
    return "%.1f MiB" % (b / 2**20) if b >= 2**20 else "%.0f KiB" % (b / 2**10)


def verdict(value, limit, strict=False):
    if value is None:
        return "n/a"
    return "PASS" if (value < limit if strict else value <= limit) else "MISS"


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)

    def version(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return [
        ("CPU", "%s, %d cores visible" % (cpu, os.cpu_count() or 0)),
        ("Memory", mem),
        ("Kernel", platform.release()),
        ("Load average at the end", " ".join("%.2f" % x for x in os.getloadavg())),
        ("Chez Scheme", version(["scheme", "--version"])),
        ("SBCL", version(["sbcl", "--version"])),
        ("Guile", version(["guile", "--version"])),
    ]


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lisp", required=True, help="our lisp binary (built with --config=opt)")
    parser.add_argument("--runs", type=int, default=5, help="rounds (default 5; --quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 1 round, small N (not for numbers)")
    parser.add_argument("--churn", default="10000,50000", help="lambda counts (comma-separated)")
    parser.add_argument("--every", type=int, default=1000, help="collect after every N lambdas")
    parser.add_argument("--sample", type=int, default=100,
                        help="ours: sample code-committed every N lambdas")
    parser.add_argument("--redefine", type=int, default=10000, help="redefinitions")
    parser.add_argument("--fib", type=int, default=20, help="repetitions of fib(30)")
    parser.add_argument("--tak", type=int, default=1000, help="repetitions of tak(18 12 6)")
    parser.add_argument("--nqueens", type=int, default=300, help="repetitions of nqueens(8)")
    parser.add_argument("--workloads", default="churn,redefine,fib,tak,nqueens,startup",
                        help="comma-separated subset of churn,redefine,fib,tak,nqueens,startup")
    parser.add_argument("--systems", default="ours,chez,sbcl,guile",
                        help="comma-separated subset of ours,chez,sbcl,guile")
    parser.add_argument("--write", nargs="?", const=DOC, metavar="FILE",
                        help="regenerate the tables of FILE (default docs/lisp-benchmarks.md)")
    parser.add_argument("--json", metavar="FILE", help="write every raw measurement here")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.churn, args.every, args.sample = 1, "200,1000", 100, 50
        args.redefine, args.fib, args.tak, args.nqueens = 200, 2, 100, 20
    wanted = args.systems.split(",")
    if not os.access(GNU_TIME, os.X_OK):
        sys.exit("lisp_compare: %s (Debian package time) is needed for peak RSS" % GNU_TIME)

    tmpdir = tempfile.mkdtemp(prefix="lisp_compare.")
    try:
        return compare(args, wanted, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def compare(args, wanted, tmpdir):
    # A private copy: a rebuild of bazel-bin during the run (other work on the same tree) must
    # not switch binaries between rounds.
    lisp = os.path.join(tmpdir, "lisp")
    shutil.copy2(args.lisp, lisp)
    tier_flag = supports_tier_flag(lisp, tmpdir)
    tiers = TIERS if tier_flag else ["default"]
    if not tier_flag:
        print("lisp_compare: %s does not accept --tier-up: measuring ours in its only (default) "
              "mode" % args.lisp, file=sys.stderr)
    systems = (tiers if "ours" in wanted else []) + [s for s in OTHERS if s in wanted]
    sx = Systems(lisp, tier_flag, tmpdir)
    failures = []
    raw = {}  # key -> system -> [result dict or None per round]

    started = time.monotonic()
    for key, program, label, unit, params, expected in workloads(args):
        raw[key] = {s: [] for s in systems}
        for r in range(args.runs):
            print("lisp_compare: %s, round %d/%d (%.0f s so far)" % (
                label, r + 1, args.runs, time.monotonic() - started), file=sys.stderr, flush=True)
            for s in systems:
                p = dict(params)
                cap = {"guile": GUILE_CAP, "0": LLVM_CAP}.get(s)
                if cap is not None and "n" in p:
                    p["n"] = min(p["n"], cap)
                variant = key + ("-%s" % s if p != params else "")
                try:
                    m = sx.measure(variant, program, s, p)
                    if m["result"] != expected(p):
                        failures.append("%s %s printed %s, expected %s" % (
                            LABEL[s], key, m["result"], expected(p)))
                except Failure as e:
                    failures.append("%s %s: %s" % (LABEL[s], key, e))
                    m = None
                raw[key][s].append(m)

    startup = {}
    if "ours" in wanted and "startup" in args.workloads.split(","):
        for path in sorted(os.listdir(STARTUP_PROGRAMS)):
            if not path.endswith(".scm"):
                continue
            name = path[:-4]
            full = os.path.join(STARTUP_PROGRAMS, path)
            expected_path = full[:-4] + ".expected"
            want = open(expected_path).read() if os.path.exists(expected_path) else None
            startup[name] = {t: [] for t in tiers}
            print("lisp_compare: startup %s" % name, file=sys.stderr, flush=True)
            for r in range(args.runs):
                for t in tiers:
                    try:
                        out, wall = sx.startup(t, full)
                        if want is not None and out != want:
                            failures.append("ours %s %s: output differs from %s" % (
                                t, path, os.path.basename(expected_path)))
                        startup[name][t].append(wall * 1e9)
                    except Failure as e:
                        failures.append("ours %s startup %s: %s" % (t, name, e))
                        startup[name][t].append(None)

    report = render(args, tiers, tier_flag, systems, raw, startup, failures)
    print(report["stdout"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "tiers": tiers, "raw": raw, "startup_ns": startup,
                       "failures": failures}, f, indent=1)
    if args.write:
        write_doc(args.write, report["blocks"])
        print("lisp_compare: wrote %s" % args.write, file=sys.stderr)
    return 1 if failures else 0


def per_unit(results):
    """Per round: nanoseconds per unit of work (None where the run failed)."""
    return [m["ns"] / m["n"] if m else None for m in results]


def render(args, tiers, tier_flag, systems, raw, startup, failures):
    ours = [s for s in systems if s in TIERS]
    others = [s for s in systems if s in OTHERS]
    units = {k: u for k, _, _, u, _, _ in workloads(args)}
    labels = {k: l for k, _, l, _, _, _ in workloads(args)}
    params = {k: p for k, _, _, _, p, _ in workloads(args)}
    keys = list(raw)
    t = {k: {s: per_unit(raw[k][s]) for s in systems} for k in keys}
    med = {k: {s: median(t[k][s]) for s in systems} for k in keys}

    def vs(k, a, b):
        return ratio_of_runs(t[k][a], t[k][b]) if k in t and a in t[k] and b in t[k] else None

    def cell(k, s):  # marked with its N when a capped run did less work than the others
        done = {m["n"] for m in raw[k][s] if m}
        v = fmt_ns(med[k][s])
        if units[k] != "run" and done and done != {params[k]["n"]}:
            v += " (%s)" % f"{min(done):,}"
        return v

    header = ["Workload, time per unit"] + [LABEL[s] for s in systems] + [
        "%s/Chez" % LABEL[s] for s in ours if "chez" in systems]
    rows = []
    for k in keys:
        rows.append(["%s, per %s" % (labels[k], units[k])] + [cell(k, s) for s in systems] +
                    [fmt_ratio(vs(k, s, "chez")) for s in ours if "chez" in systems])
    main_table = table(header, rows)

    # Memory of ours across the churn sizes.
    churn_keys = [k for k in keys if k.startswith("churn-")]
    mem_rows = []
    mem = {}
    for s in ours:
        rss = [median([m["rss_kib"] * 1024 if m else None for m in raw[k][s]])
               for k in churn_keys]
        code = [median([m["stats"].get("peak-code-committed") if m else None
                        for m in raw[k][s]]) for k in churn_keys]
        for k, r, c in zip(churn_keys, rss, code):
            mem[s, k] = (r, c)
        row = [LABEL[s]]
        for k, r, c in zip(churn_keys, rss, code):
            row += [fmt_bytes(r), fmt_bytes(c)]
        if len(churn_keys) >= 2:
            row += [fmt_ratio(rss[-1] / rss[0] if rss[-1] and rss[0] else None),
                    fmt_ratio(code[-1] / code[0] if code[-1] and code[0] else None)]
        mem_rows.append(row)
    mem_header = ["Ours"]
    for k in churn_keys:
        n = k.split("-")[1]
        mem_header += ["peak RSS, %s" % f"{int(n):,}", "peak code committed, %s" % f"{int(n):,}"]
    if len(churn_keys) >= 2:
        sizes = "%s/%s" % (churn_keys[-1].split("-")[1], churn_keys[0].split("-")[1])
        mem_header += ["RSS " + sizes, "code " + sizes]
    mem_table = table(mem_header, mem_rows) if ours else ""

    # Startup to exit, ours only.
    st_rows = []
    st_med = {}
    for name, per in startup.items():
        for tr in tiers:
            st_med[name, tr] = median(per[tr])
        r = ratio_of_runs(per["default"], per["0"]) if tier_flag else None
        st_rows.append([name + ".scm"] + [fmt_ns(st_med[name, tr]) for tr in tiers] +
                       ([fmt_ratio(r)] if tier_flag else []))
    st_header = ["Program (whole process)"] + [LABEL[tr] for tr in tiers] + (
        ["default/0"] if tier_flag else [])
    st_table = table(st_header, st_rows) if startup else ""

    # Targets.
    targets = []
    if "chez" in systems and "default" in ours:
        for k in churn_keys:
            r = vs(k, "default", "chez")
            targets.append(("churn %s: ours default <= 0.5x Chez per lambda (aim 0.1x)" %
                            f"{int(k.split('-')[1]):,}", fmt_ratio(r), verdict(r, 0.5)))
        if "redefine" in keys:
            r = vs("redefine", "default", "chez")
            targets.append(("redefinition: ours default <= 0.5x Chez", fmt_ratio(r),
                            verdict(r, 0.5)))
    if len(churn_keys) >= 2 and "default" in ours:
        lo, hi = churn_keys[0], churn_keys[-1]
        for i, what in ((0, "peak RSS"), (1, "peak committed code")):
            a, b = mem[("default", hi)][i], mem[("default", lo)][i]
            r = a / b if a and b else None
            targets.append(("%s at %s within 5%% of %s (ours default)" % (
                what, f"{int(hi.split('-')[1]):,}", f"{int(lo.split('-')[1]):,}"),
                fmt_ratio(r), verdict(r, 1.05)))
    for k in [k for k in ("fib", "tak", "nqueens") if k in keys]:
        r = vs(k, "never", "0") if tier_flag else None
        targets.append(("%s: never <= 3x LLVM-only (0)" % k, fmt_ratio(r), verdict(r, 3.0)))
        r = vs(k, "default", "0") if tier_flag else None
        targets.append(("%s: default within 10%% of 0" % k, fmt_ratio(r), verdict(r, 1.10)))
    if startup:
        if tier_flag:
            ratios = {n: ratio_of_runs(per["default"], per["0"]) for n, per in startup.items()}
            slow = [n for n, r in ratios.items() if r is None or r >= 1]
            worst = max((r for r in ratios.values() if r is not None), default=None)
            targets.append(("startup: default faster than 0, every program (worst default/0)",
                            fmt_ratio(worst), "MISS (%s)" % ", ".join(slow) if slow else "PASS"))
        else:
            targets.append(("startup: default faster than 0", "-", "n/a"))
    target_table = table(["Target", "Measured (ratio)", "Verdict"], targets)

    notes = []
    if not tier_flag:
        notes.append("**Single tier:** this lisp binary does not accept `--tier-up`, so ours "
                     "ran only in its default mode (LLVM for every lambda); the tier targets are "
                     "n/a.")
    if "guile" in systems:
        notes.append("Guile's churn and redefinition runs are capped at %s lambdas (the count is "
                     "shown next to its time)." % f"{GUILE_CAP:,}")
    if "0" in systems:
        notes.append("Ours `0` (LLVM for every lambda) runs churn and redefinition with at most "
                     "%s lambdas (the count is shown next to its time)." % f"{LLVM_CAP:,}")
    if args.quick:
        notes.append("**--quick:** one round and small N; a smoke check, not a measurement.")
    setup = ("%d round%s, systems alternating within each round; median times; ratios are "
             "medians of per-round ratios. Churn %s lambdas (collect every %s), %s "
             "redefinitions, fib x%d, tak x%d, nqueens x%d." % (
                 args.runs, "" if args.runs == 1 else "s", args.churn.replace(",", " and "),
                 f"{args.every:,}", f"{args.redefine:,}", args.fib, args.tak, args.nqueens))
    result_line = ("All programs printed the expected results." if not failures else
                   "FAILURES:\n\n" + "\n".join("- " + f.replace("\n", " ")[:400]
                                               for f in failures))

    results_md = "\n\n".join(x for x in [
        setup, "\n".join(notes), "### Time per unit of work", main_table,
        "### Memory of ours across churn sizes" if mem_table else "", mem_table,
        "### Startup to exit (ours)" if st_table else "", st_table,
        "### Targets", target_table, result_line] if x)
    machine_md = "\n".join("- %s: %s" % kv for kv in machine())
    return {"stdout": results_md + "\n\nMachine:\n\n" + machine_md,
            "blocks": {"results": results_md, "machine": machine_md}}


BEGIN = "<!-- lisp_compare:begin %s (generated by bench/lisp_compare.sh --write) -->"
END = "<!-- lisp_compare:end %s -->"


def write_doc(path, blocks):
    """Replaces each generated block of `path`, keeping everything outside the markers."""
    text = open(path).read() if os.path.exists(path) else ""
    for name, body in blocks.items():
        begin, end = BEGIN % name, END % name
        block = "%s\n%s\n%s" % (begin, body, end)
        i, j = text.find(begin), text.find(end)
        if i >= 0 and j > i:
            text = text[:i] + block + text[j + len(end):]
        else:
            text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
