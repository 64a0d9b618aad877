#include "examples/lisp/repl.h"

#include <pthread.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include <editline/readline.h>
#include <spdlog/fmt/fmt.h>

#include "examples/lisp/boehm.h"
#include "examples/lisp/error.h"
#include "examples/lisp/reader.h"
#include "examples/lisp/runtime.h"

namespace lisp {
namespace {

struct Options {
  bool stats = false;
  std::optional<int64_t> tier_up;  // --tier-up; else LISP_TIER_UP; else the default
  size_t stack_kib = 0;            // 0: run on the calling thread
  std::string script;
};

// Prints an error. Program output is flushed first so that the two streams interleave in
// the order things happened.
void report(const std::string& message, const std::string& context) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", message.c_str());
  if (!context.empty()) std::fprintf(stderr, "  %s\n", context.c_str());
  std::fflush(stderr);
}

// Evaluates one top-level form; false (after reporting) if it failed. ExitRequest passes.
bool evaluate(Runtime& runtime, Value form, const std::string& where, Value* result) {
  try {
    *result = runtime.eval(form);
    return true;
  } catch (const Error& e) {
    report(e.what(), fmt::format("in {}{}", where, write_short(form, 100)));
  } catch (const std::exception& e) {
    report(fmt::format("internal error: {}", e.what()),
           fmt::format("in {}{}", where, write_short(form, 100)));
  }
  return false;
}

int run_script(Runtime& runtime, const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    report(fmt::format("cannot open {}", path), "");
    return 1;
  }
  std::stringstream contents;
  contents << file.rdbuf();
  std::string text = contents.str();
  Reader reader(text, path);
  for (;;) {
    std::optional<Value> form;
    try {
      form = reader.next();
    } catch (const SyntaxError& e) {
      report(e.what(), "");
      return 1;
    }
    if (!form) return 0;
    Value result;
    if (!evaluate(runtime, *form, fmt::format("the form at {}:{}: ", path, reader.line_of_last()),
                  &result)) {
      return 1;
    }
    runtime.safepoint();
  }
}

// One line of input, without its newline; nullopt at end of input.
class LineSource {
 public:
  LineSource() : interactive_(isatty(STDIN_FILENO) != 0) {}

  std::optional<std::string> read(bool continuation) {
    if (!interactive_) {
      std::string line;
      if (!std::getline(std::cin, line)) return std::nullopt;
      return line;
    }
    std::fflush(stdout);
    char* line = readline(continuation ? "  ... " : "lisp> ");
    if (line == nullptr) {
      std::fputc('\n', stdout);
      return std::nullopt;
    }
    std::string text(line);
    std::free(line);
    if (!text.empty()) add_history(text.c_str());
    return text;
  }

 private:
  bool interactive_;
};

int run_repl(Runtime& runtime) {
  LineSource input;
  std::string pending;  // lines of a datum that is not complete yet
  for (;;) {
    std::optional<std::string> line = input.read(!pending.empty());
    if (!line) {
      if (!pending.empty()) report("end of input inside a datum", "");
      return 0;
    }
    pending += *line;
    pending += '\n';
    // Parse everything first: the forms must be complete before any of them runs.
    Reader reader(pending, "repl");
    std::vector<Value, traceable_allocator<Value>> forms;
    try {
      while (std::optional<Value> form = reader.next()) forms.push_back(*form);
    } catch (const SyntaxError& e) {
      if (e.incomplete()) continue;
      report(e.what(), "");
      pending.clear();
      continue;
    }
    pending.clear();
    for (Value form : forms) {
      Value result;
      if (evaluate(runtime, form, "", &result) && result != kUnspecified) {
        std::string text = write_string(result) + "\n";
        std::fwrite(text.data(), 1, text.size(), stdout);
      }
      runtime.safepoint();
    }
    std::fflush(stdout);
  }
}

int run(Runtime& runtime, const Options& options) {
  int status;
  try {
    status = options.script.empty() ? run_repl(runtime) : run_script(runtime, options.script);
  } catch (const ExitRequest& exit) {
    status = exit.code;
  }
  std::fflush(stdout);
  return status;
}

struct ThreadRun {
  Runtime* runtime;
  const Options* options;
  int status;
};

void* run_on_thread(void* argument) {
  auto* job = static_cast<ThreadRun*>(argument);
  try {
    job->runtime->attach_current_thread();
  } catch (const Error& e) {
    report(e.what(), "");
    job->status = 1;
    return nullptr;
  }
  job->status = run(*job->runtime, *job->options);
  job->runtime->detach_current_thread();
  return nullptr;
}

// Runs the Lisp on a thread with a stack of options.stack_kib KiB, so that the stack depth of
// a program can be checked on a small, known stack.
int run_with_stack(Runtime& runtime, const Options& options) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  int rc = pthread_attr_setstacksize(&attr, options.stack_kib << 10);
  ThreadRun job{&runtime, &options, 1};
  pthread_t thread;
  if (rc == 0) rc = pthread_create(&thread, &attr, run_on_thread, &job);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    report(fmt::format("cannot start a thread with a {} KiB stack: {}", options.stack_kib,
                       std::strerror(rc)),
           "");
    return 1;
  }
  pthread_join(thread, nullptr);
  return job.status;
}

std::optional<Options> parse(const std::vector<std::string>& args) {
  Options options;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--stats") {
      options.stats = true;
    } else if (arg == "--tier-up" && i + 1 < args.size()) {
      options.tier_up = parse_tier_up(args[++i]);
      if (!options.tier_up) return std::nullopt;
    } else if (arg == "--stack-size" && i + 1 < args.size()) {
      char* end = nullptr;
      options.stack_kib = std::strtoull(args[++i].c_str(), &end, 10);
      if (*end != '\0' || options.stack_kib < 64) return std::nullopt;
    } else if (arg.starts_with("-") || !options.script.empty()) {
      return std::nullopt;
    } else {
      options.script = arg;
    }
  }
  return options;
}

}  // namespace

int lisp_main(const std::vector<std::string>& args) {
  std::optional<Options> options = parse(args);
  if (!options) {
    std::fprintf(stderr,
                 "usage: %s [--stats] [--stack-size KIB (>= 64)] [--tier-up N|never] [SCRIPT]\n",
                 args.empty() ? "lisp" : args[0].c_str());
    return 2;
  }
  RuntimeOptions runtime_options;
  if (options->tier_up) {
    runtime_options.tier_up = *options->tier_up;
  } else if (const char* env = std::getenv("LISP_TIER_UP"); env != nullptr && *env != '\0') {
    std::optional<int64_t> tier_up = parse_tier_up(env);
    if (!tier_up) {
      std::fprintf(stderr, "LISP_TIER_UP must be a count or \"never\", not \"%s\"\n", env);
      return 2;
    }
    runtime_options.tier_up = *tier_up;
  }
  std::unique_ptr<Runtime> runtime;
  try {
    runtime = Runtime::create(runtime_options);
  } catch (const Error& e) {
    report(e.what(), "");
    return 1;
  }
  int status =
      options->stack_kib != 0 ? run_with_stack(*runtime, *options) : run(*runtime, *options);
  if (options->stats) {
    std::string dump = runtime->gc().dump_text();
    std::fwrite(dump.data(), 1, dump.size(), stdout);
    std::fflush(stdout);
  }
  return status;
}

}  // namespace lisp
