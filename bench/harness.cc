#include "bench/harness.h"

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace codeheap::bench {
namespace {

std::vector<WorkloadSpec>& registry() {
  static std::vector<WorkloadSpec> specs;
  return specs;
}

bool smoke_mode = false;

// Runs `count` operations of `workload` in batches; returns the seconds spent in run() only.
double run_batches(Workload& workload, const WorkloadSpec& spec, size_t count) {
  std::chrono::steady_clock::duration timed{};
  for (size_t done = 0; done < count;) {
    const size_t batch = std::min(spec.batch, count - done);
    if (spec.prepared) workload.prepare(batch);
    const auto start = std::chrono::steady_clock::now();
    workload.run(batch);
    timed += std::chrono::steady_clock::now() - start;
    done += batch;
  }
  return std::chrono::duration<double>(timed).count();
}

double thread_cpu_ns() {
  timespec now;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e9 + static_cast<double>(now.tv_nsec);
}

size_t maps_lines() {
  std::ifstream maps("/proc/self/maps");
  size_t lines = 0;
  for (std::string line; std::getline(maps, line);) ++lines;
  return lines;
}

int run_fixed(const std::string& name, size_t iterations, std::optional<size_t> warmup) {
  auto spec = std::find_if(registry().begin(), registry().end(),
                           [&](const WorkloadSpec& s) { return s.name == name; });
  if (spec == registry().end()) die("no fixed-iteration workload named '" + name + "'");
  std::unique_ptr<Workload> workload = spec->make();
  run_batches(*workload, *spec, warmup.value_or(spec->warmup));
  const double seconds = run_batches(*workload, *spec, iterations);
  // Measured while the workload still holds everything the iterations left behind.
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf(
      "{\"workload\": \"%s\", \"iterations\": %zu, \"seconds\": %.9f, "
      "\"peak_rss_kib\": %ld, \"maps_lines\": %zu}\n",
      name.c_str(), iterations, seconds, usage.ru_maxrss, maps_lines());
  std::fflush(stdout);
  return 0;
}

// "--flag=value" -> value, if `arg` is that flag.
std::optional<std::string_view> flag_value(std::string_view arg, std::string_view flag) {
  if (arg.size() < flag.size() + 3 || arg.substr(0, 2) != "--" ||
      arg.substr(2, flag.size()) != flag || arg[flag.size() + 2] != '=')
    return std::nullopt;
  return arg.substr(flag.size() + 3);
}

size_t parse_count(std::string_view flag, std::string_view text) {
  char* end = nullptr;
  const std::string value(text);
  const unsigned long long count = std::strtoull(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0') die("--" + std::string(flag) + ": not a count: " + value);
  return count;
}

}  // namespace

benchmark::internal::Benchmark* add(WorkloadSpec spec) {
  registry().push_back(spec);
  return benchmark::RegisterBenchmark(spec.name.c_str(), [spec](benchmark::State& state) {
    std::unique_ptr<Workload> workload = spec.make();
    run_batches(*workload, spec, spec.warmup);
    while (state.KeepRunningBatch(static_cast<benchmark::IterationCount>(spec.batch))) {
      if (spec.prepared) {
        state.PauseTiming();
        workload->prepare(spec.batch);
        state.ResumeTiming();
      }
      workload->run(spec.batch);
    }
    workload->report(state);
    state.SetItemsProcessed(state.iterations());
  });
}

Alternating::Alternating(Side ours, Side baseline, size_t warmup)
    : ours_(std::move(ours)), baseline_(std::move(baseline)) {
  ours_.workload->run(warmup);
  baseline_.workload->run(warmup);
}

void Alternating::run(size_t rounds) {
  for (size_t i = 0; i < rounds; ++i) {
    const double start = thread_cpu_ns();
    ours_.workload->run(ours_.per_round);
    const double middle = thread_cpu_ns();
    baseline_.workload->run(baseline_.per_round);
    const double end = thread_cpu_ns();
    ours_ns_ += middle - start;
    baseline_ns_ += end - middle;
  }
  rounds_ += rounds;
}

void Alternating::report(benchmark::State& state) {
  const double rounds = static_cast<double>(rounds_);
  const double ours_ns = ours_ns_ / (rounds * static_cast<double>(ours_.per_round));
  const double baseline_ns = baseline_ns_ / (rounds * static_cast<double>(baseline_.per_round));
  state.counters["ours_us"] = ours_ns / 1e3;
  state.counters["stock_us"] = baseline_ns / 1e3;
  state.counters["speedup"] = baseline_ns / ours_ns;
}

bool smoke() { return smoke_mode; }

void die(const std::string& what) {
  std::fprintf(stderr, "benchmark failed: %s\n", what.c_str());
  std::exit(1);
}

int main(int argc, char** argv) {
  std::optional<std::string> run;
  std::optional<size_t> iterations;
  std::optional<size_t> warmup;
  // Our flags are taken out of argv; the rest belongs to Google Benchmark.
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (auto value = flag_value(arg, "run")) {
      run = std::string(*value);
    } else if (auto value = flag_value(arg, "iterations")) {
      iterations = parse_count("iterations", *value);
    } else if (auto value = flag_value(arg, "warmup")) {
      warmup = parse_count("warmup", *value);
    } else if (arg == "--smoke") {
      smoke_mode = true;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;

  if (run || iterations || warmup) {
    if (!run || !iterations) die("fixed-iteration mode needs both --run=NAME and --iterations=N");
    if (argc > 1) die(std::string("unexpected argument in fixed-iteration mode: ") + argv[1]);
    return run_fixed(*run, *iterations, warmup);
  }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace codeheap::bench
