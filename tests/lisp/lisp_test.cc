// The Lisp of examples/lisp, run as its users run it: the `lisp` binary (and the demo) as
// subprocesses from the runfiles, with scripts, a REPL session through a pipe, and
// statistics read back through (heap-stat ...).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string runfile(const std::string& path) {
  const char* root = std::getenv("TEST_SRCDIR");
  return std::string(root != nullptr ? root : ".") + "/codeheap/" + path;
}

std::string temp_dir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string slurp(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

std::string write_temp(const std::string& name, const std::string& contents) {
  std::string path = temp_dir() + "/" + name;
  std::ofstream(path) << contents;
  return path;
}

struct Outcome {
  int status = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
};

// Runs `args` (args[0] a runfiles path) with `input` written to its stdin through a pipe.
// Output goes to files, so a chatty child never blocks on a full pipe.
Outcome run(const std::vector<std::string>& args, const std::string& input = "") {
  static int counter = 0;
  std::string out_path = temp_dir() + "/out" + std::to_string(++counter);
  std::string err_path = out_path + ".err";
  int out_fd = open(out_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
  int err_fd = open(err_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
  int in[2];
  if (out_fd < 0 || err_fd < 0 || pipe(in) != 0) {
    ADD_FAILURE() << "cannot set up the child's files";
    return {};
  }
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    close(in[0]);
    close(in[1]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(in[0]);
  close(out_fd);
  close(err_fd);
  for (size_t done = 0; done < input.size();) {
    ssize_t n = write(in[1], input.data() + done, input.size() - done);
    if (n <= 0) break;  // the child stopped reading (it exited)
    done += static_cast<size_t>(n);
  }
  close(in[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  Outcome result;
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  unlink(out_path.c_str());
  unlink(err_path.c_str());
  return result;
}

Outcome lisp(const std::vector<std::string>& args, const std::string& input = "") {
  std::vector<std::string> all = {runfile("examples/lisp/lisp")};
  all.insert(all.end(), args.begin(), args.end());
  return run(all, input);
}

// Checks that `text` contains each of `parts` in this order.
::testing::AssertionResult contains_in_order(const std::string& text,
                                             const std::vector<std::string>& parts) {
  size_t at = 0;
  for (const std::string& part : parts) {
    size_t found = text.find(part, at);
    if (found == std::string::npos) {
      return ::testing::AssertionFailure() << "missing (in order) \"" << part << "\" in:\n" << text;
    }
    at = found + part.size();
  }
  return ::testing::AssertionSuccess();
}

// The integers printed in `text`, in order.
std::vector<long long> numbers(const std::string& text) {
  std::vector<long long> result;
  std::regex number("-?[0-9]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number);
       it != std::sregex_iterator(); ++it) {
    result.push_back(std::stoll(it->str()));
  }
  return result;
}

class Environment : public ::testing::Environment {
  // A child that exits before reading all of its input must not kill the test with SIGPIPE.
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }
};
const auto* const environment = ::testing::AddGlobalTestEnvironment(new Environment);

class Program : public ::testing::TestWithParam<std::string> {};

TEST_P(Program, OutputMatchesExpected) {
  std::string base = runfile("examples/lisp/programs/" + GetParam());
  Outcome r = lisp({base + ".scm"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out, slurp(base + ".expected"));
}

INSTANTIATE_TEST_SUITE_P(Lisp, Program,
                         ::testing::Values("fib", "tak", "ackermann", "nqueens", "closures",
                                           "churn"));

TEST(Repl, ScriptedSession) {
  const std::string session = R"((define (double x) (* x 2))
(define (caller x) (+ (double x) 1))
(caller 20)
(define (double x) (* x 100))
(caller 20)
(list 1 2
  3)
)
(display "syntax errors do not end the session")
(newline)
undefined-variable
(car 5)
(map car '(1 2))
(double 1 2)
(* 4611686018427387903 2)
(+ 4611686018427387903 1)
(if)
(caller 1)
(exit)
(display "not reached")
)";
  Outcome r = lisp({}, session);
  EXPECT_EQ(r.status, 0) << r.err;
  // caller was compiled once; the redefinition of double reaches it through double's cell.
  EXPECT_EQ(r.out, "41\n2001\n(1 2 3)\nsyntax errors do not end the session\n101\n");
  EXPECT_TRUE(contains_in_order(
      r.err,
      {"error: syntax error: repl:1:1: unexpected ')'",
       "error: unbound variable: undefined-variable", "  in undefined-variable",
       "error: car: expected a pair, got 5", "  in (car 5)", "error: car: expected a pair, got 1",
       "  in (map car '(1 2))", "error: double: expected 1 argument, got 2", "  in (double 1 2)",
       "error: *: fixnum overflow", "  in (* 4611686018427387903 2)", "error: +: fixnum overflow",
       "  in (+ 4611686018427387903 1)", "error: bad syntax in (if)", "  in (if)"}));
}

TEST(Repl, EndOfInputQuitsCleanly) {
  Outcome r = lisp({}, "(define x 42)\nx\n");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "42\n");
}

TEST(Repl, ExitCode) {
  Outcome r = lisp({}, "(exit 7)\n");
  EXPECT_EQ(r.status, 7) << r.err;
}

TEST(Script, ErrorNamesTheFormAndExitsNonZero) {
  std::string path = write_temp("error.scm", R"((display "before")
(newline)
(define (f x) (car x))
(f 42)
(display "after")
)");
  Outcome r = lisp({path});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "before\n");
  EXPECT_TRUE(contains_in_order(
      r.err, {"error: car: expected a pair, got 42", "in the form at " + path + ":4: (f 42)"}));
}

TEST(Script, SyntaxErrorExitsNonZero) {
  std::string path = write_temp("syntax.scm", "(display 1)\n(display (+ 1 2)\n");
  Outcome r = lisp({path});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "1");
  EXPECT_TRUE(contains_in_order(
      r.err, {"error: syntax error: " + path + ":3:1: unterminated list opened at 2:1"}));
}

// Nesting: source deeper than the reader's limit is a syntax error; data built deeper at run
// time is compared, printed and refused by eval without recursing through the native stack.
TEST(Script, DeepNestingIsAnErrorNotACrash) {
  const std::string deep = std::string(5000, '(') + std::string(5000, ')');
  std::string path = write_temp("deep.scm", "(display 1)\n'" + deep + "\n(display 2)\n");
  Outcome r = lisp({path});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out, "1");
  EXPECT_TRUE(contains_in_order(r.err, {"error: syntax error: ", "nested more than 1000 deep"}));

  Outcome built = lisp({}, R"((define (nest n x) (if (= n 0) x (nest (- n 1) (list x))))
(define a (nest 200000 1))
(equal? a (nest 200000 1))
(equal? a (nest 200000 2))
(eval a)
(car (list (nest 2000 1)))
)");
  EXPECT_EQ(built.status, 0) << built.err;
  EXPECT_TRUE(contains_in_order(built.out, {"#t", "#f"})) << built.out;
  EXPECT_TRUE(contains_in_order(built.err, {"nested more than 1000 deep"})) << built.err;
  EXPECT_TRUE(contains_in_order(built.out, {"(...)"})) << built.out;
}

// The Lisp thread's stack for the two tests below. Sanitizer builds inflate the frames of the
// C++ runtime (and of compilation, which runs on that thread), so they get 2 MiB; either size
// is far below the 160 MB that 10^7 nested frames of even 16 bytes would need.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr const char* kStackKiB = "2048";
#else
constexpr const char* kStackKiB = "256";
#endif

// Tail calls of every kind, 10^6 and 10^7 deep, on a small stack: they can only complete if
// each one reuses its caller's frame.
TEST(TailCalls, RunInConstantStack) {
  std::string path = write_temp("tail.scm", R"((define (count n) (if (= n 0) 'done (count (- n 1))))
(display (count 1000000)) (newline)
(display (count 10000000)) (newline)
(define (ping n) (if (= n 0) 'ping (pong (- n 1))))
(define (pong n) (if (= n 0) 'pong (ping (- n 1))))
(display (ping 1000001)) (newline)
(display (let loop ((i 0)) (cond ((= i 1000000) i) (else (loop (+ i 1)))))) (newline)
(define (via-apply n) (if (= n 0) 'applied (apply via-apply (list (- n 1)))))
(display (via-apply 1000000)) (newline)
(define (rotate a b c d e n) (if (= n 0) (list a b c d e) (rotate b c d e a (- n 1))))
(display (rotate 1 2 3 4 5 1000003)) (newline)
(define (and-or n) (and #t (or #f (if (= n 0) 'and-or (and-or (- n 1))))))
(display (and-or 1000000)) (newline)
(define (make-looper) (lambda (n) (if (= n 0) 'closure (looper (- n 1)))))
(define looper (make-looper))
(display (looper 1000000)) (newline)
)");
  Outcome r = lisp({"--stack-size", kStackKiB, path});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "done\ndone\npong\n1000000\napplied\n(4 5 1 2 3)\nand-or\nclosure\n");
}

// The control for the test above: the same stack does overflow with non-tail recursion, and
// the overflow is a Lisp error after which the runtime goes on.
TEST(TailCalls, DeepNonTailRecursionIsAnErrorNotACrash) {
  Outcome r =
      lisp({"--stack-size", kStackKiB}, R"((define (deep n) (if (= n 0) 0 (+ 1 (deep (- n 1)))))
(deep 1000000)
(deep 1000)
)");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "1000\n");
  EXPECT_TRUE(contains_in_order(r.err, {"error: recursion too deep", "in (deep 1000000)"}));
}

// Generated code is collected: after 800 lambdas are compiled by eval, called and dropped, the
// code in use is back at its baseline, and the committed code bytes grew by well under half of
// what the 800 lambdas' code takes (measured first by keeping 100 of them alive; the runtime
// collects every 256 compilations, so about a third is committed at the peak).
TEST(Churn, CodeBytesStayBounded) {
  Outcome r = lisp({}, R"((define (make-lambda i) (eval (list 'lambda '(x) (list '+ 'x i))))
(define (churn n) (when (> n 0) ((make-lambda n) 1) (churn (- n 1))))
(define (keep n acc) (if (= n 0) acc (keep (- n 1) (cons (make-lambda n) acc))))
(define (stats)
  (list (heap-stat 'code-used) (heap-stat 'code-committed) (heap-stat 'code-objects-finalized)))
(gc)
(define before (heap-stat 'code-used))
(define kept (keep 100 '()))
(- (heap-stat 'code-used) before)
(set! kept #f)
(gc)
(stats)
(churn 800)
(gc)
(stats)
)");
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<long long> n = numbers(r.out);
  ASSERT_EQ(n.size(), 7u) << r.out;
  const long long per_lambda = n[0] / 100;
  const long long used_before = n[1], committed_before = n[2], finalized_before = n[3];
  const long long used_after = n[4], committed_after = n[5], finalized_after = n[6];
  ASSERT_GT(per_lambda, 0) << r.out;
  EXPECT_GE(finalized_after - finalized_before, 790);
  EXPECT_LE(used_after - used_before, 4096);
  EXPECT_LE(committed_after - committed_before, 800 * per_lambda / 2) << r.out;
}

// Quoted data embedded in code is kept alive by the code object's literal pool, not by roots:
// heavy allocation and collections must not recycle it while the code lives.
TEST(LiteralPool, QuotedConstantsSurviveCollections) {
  Outcome r = lisp({}, R"((define (quoted) '(1 (2 "three") four))
(define (garbage n) (when (> n 0) (list 1 2 3 4 5 6 7 8) (string-append "x" "y") (garbage (- n 1))))
(garbage 300000)
(gc)
(garbage 300000)
(gc)
(quoted)
(equal? (quoted) (list 1 (list 2 "three") 'four))
)");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "(1 (2 \"three\") four)\n#t\n");
}

TEST(Stats, HeapStatsAndTheStatsFlagPrintTheDump) {
  std::string path = write_temp("stats.scm", "(heap-stats)\n");
  Outcome r = lisp({"--stats", path});
  EXPECT_EQ(r.status, 0) << r.err;
  // Once from (heap-stats), once at exit.
  EXPECT_TRUE(contains_in_order(r.out, {"heap-stats \"codeheap\"", "live code objects",
                                        "heap-stats \"codeheap\"", "live code objects"}));
}

TEST(Stats, HeapMapWritesThePicture) {
  const std::string map = ::testing::TempDir() + "lisp_heap_map.svg";
  std::remove(map.c_str());
  const std::string script = write_temp(
      "map.scm", "(define (twice x) (* 2 x))\n(display (twice 21))\n(newline)\n(heap-map \"" + map +
                     "\")\n(heap-map \"/nonexistent-dir/map.svg\")\n");
  Outcome r = lisp({script});
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(r.out, "42\n");
  EXPECT_NE(r.err.find("heap-map: cannot open '/nonexistent-dir/map.svg'"), std::string::npos)
      << r.err;
  std::ifstream file(map);
  const std::string svg((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
}

// --- Tiers (docs/tiers.md). The suite above runs once per tier mode (tests/BUILD sets
// LISP_TIER_UP); these tests choose their mode themselves. ---

// A loop tiers up while it runs: the baseline iteration that waits for the compile thread
// returns into baseline code, and its tail call enters the LLVM code.
// The collector is conservative: a stale word on the stack (a frame slot never written) may
// keep a dead unit one collection longer. `settle` collects until the count stops falling,
// scrubbing the stack in between, so both counts are of what is really reachable. (scrub runs
// LLVM code before the first count, so that its own tier-up is not counted.)
std::string tier_up_while_running() {
  return R"((define (spin n acc)
  (if (= n 500) (tier-up-wait))
  (if (= n 0) acc (spin (- n 1) (+ acc 1))))
(define (scrub n) (if (= n 0) 0 (+ 1 (scrub (- n 1)))))
(define (settle last tries)
  (scrub 300)
  (gc)
  (let ((now (heap-stat 'baseline-live-units)))
    (if (and (> tries 0) (< now last)) (settle now (- tries 1)) now)))
(define (stats) (list (heap-stat 'tier-ups) (settle 1000000 10)))
(define scrubbed (scrub 300))
(tier-up-wait)
(procedure-tier spin)
(stats)
(spin 2000 0)
(procedure-tier spin)
(stats)
)";
}

void expect_tier_up_while_running(const Outcome& r) {
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains_in_order(r.out, {"baseline\n", "2000\n", "llvm\n"})) << r.out;
  std::vector<long long> n = numbers(r.out);
  ASSERT_EQ(n.size(), 5u) << r.out;
  EXPECT_EQ(n[3] - n[0], 1);  // one tier-up, spin's (scrub's came before)
  // spin's baseline unit, no longer referenced, was collected.
  EXPECT_LE(n[4], n[1] - 1) << r.out;
}

TEST(Tiers, TierUpWhileALoopRunsOnTheMainThread) {
  expect_tier_up_while_running(lisp({"--tier-up", "100"}, tier_up_while_running()));
}

TEST(Tiers, TierUpWhileALoopRunsOnAnotherRegisteredThread) {
  // --stack-size runs the Lisp on a thread of its own, registered with the collector and the
  // code heap's thread registry. 1 MiB was too little under TSan: "recursion too deep".
  expect_tier_up_while_running(
      lisp({"--tier-up", "100", "--stack-size", "2048"}, tier_up_while_running()));
}

// A non-tail frame of the baseline version is still on the stack when the LLVM version is
// installed: it finishes in its intact baseline code, and the collection after it reclaims it.
TEST(Tiers, ABaselineFrameOutlivesItsTierUp) {
  Outcome r =
      lisp({"--tier-up", "50"},
           R"((define (down n) (if (= n 0) (begin (tier-up-wait) (gc) 0) (+ 1 (down (- n 1)))))
(down 100)
(procedure-tier down)
(gc)
(down 100)
)");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "100\nllvm\n100\n");
}

// Every closure of a lambda switches at once: a2 was never called, yet runs the LLVM code.
TEST(Tiers, ExistingClosuresRunTheNewCode) {
  Outcome r = lisp({"--tier-up", "100"}, R"((define (make-adder k) (lambda (x) (+ x k)))
(define a1 (make-adder 1))
(define a2 (make-adder 2))
(procedure-tier a2)
(define (call-many n) (when (> n 0) (a1 n) (call-many (- n 1))))
(call-many 200)
(tier-up-wait)
(procedure-tier a1)
(procedure-tier a2)
(a2 40)
)");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "baseline\nllvm\nllvm\n42\n");
}

// A redefinition racing a tier-up of the old version wins; the stale result is dropped.
TEST(Tiers, RedefinitionWinsOverAStaleTierUp) {
  Outcome r = lisp({"--tier-up", "100"}, R"((define (f x) (+ x 1))
(define (caller x) (f x))
(tier-up-hold #t)
(define (call-many n) (when (> n 0) (caller n) (call-many (- n 1))))
(call-many 200)
(define (f x) (+ x 2))
(tier-up-hold #f)
(tier-up-wait)
(caller 1)
(procedure-tier f)
(heap-stat 'tier-ups-discarded)
)");
  ASSERT_EQ(r.status, 0) << r.err;
  // call-many and caller tier up too; f's old version is the one dropped.
  EXPECT_TRUE(contains_in_order(r.out, {"3\n", "baseline\n", "1\n"})) << r.out;
}

TEST(Tiers, ModesAreChosenByFlagOrEnvironment) {
  EXPECT_EQ(lisp({"--tier-up", "never"}, "(procedure-tier (lambda () 1))\n").out, "baseline\n");
  EXPECT_EQ(lisp({"--tier-up", "0"}, "(procedure-tier (lambda () 1))\n").out, "llvm\n");
  Outcome bad = lisp({"--tier-up", "soon"}, "");
  EXPECT_EQ(bad.status, 2);
  EXPECT_TRUE(contains_in_order(bad.err, {"--tier-up N|never"}));
}

TEST(Demo, ShowsRedefinitionAndCollection) {
  Outcome r = run({runfile("examples/lisp/demo")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains_in_order(r.out, {"hello, world\n", "bonjour, world\n"}));
  std::smatch m;
  auto used = [&](const std::string& label) {
    std::regex line(label + " *: code in use ([0-9]+) bytes");
    return std::regex_search(r.out, m, line) ? std::stoll(m[1]) : -1;
  };
  long long baseline = used("baseline"), alive = used("with the 300 alive"),
            dropped = used("dropped, then \\(gc\\)");
  ASSERT_GT(baseline, 0) << r.out;
  EXPECT_GT(alive, baseline + 300 * 100);
  EXPECT_LE(dropped, baseline + 4096);
  EXPECT_TRUE(contains_in_order(r.out, {"== heap-stats", "heap-stats \"codeheap\""}));
}

}  // namespace
