// Stencils for tests/jit/stencil_test.cc, one feature each. Every stencil has the type
// int64_t (int64_t* env, int64_t x); continuations are musttail calls to the extern CONT/LOOP.
#include <stdint.h>

extern char K[];     // a 64-bit constant: movabs, R_X86_64_64
extern char K32[1];  // a small object: a 32-bit sign-extended absolute, R_X86_64_32S
int64_t CONT(int64_t* env, int64_t x);
int64_t LOOP(int64_t* env, int64_t x);
int64_t stencil_test_add(int64_t x);  // host helpers (tests/jit/stencil_test.cc)
int64_t stencil_test_throw(int64_t x);

#define NEXT(value) __attribute__((musttail)) return CONT(env, value)

int64_t add_const(int64_t* env, int64_t x) { NEXT(x + (int64_t)(uintptr_t)K); }

int64_t add_small(int64_t* env, int64_t x) { NEXT(x + (int64_t)(uintptr_t)K32); }

// env[0] counts the iterations of a loop whose back edge is a jump to this stencil's label.
int64_t count_down(int64_t* env, int64_t x) {
  if (x > 0) {
    env[0] += 1;
    __attribute__((musttail)) return LOOP(env, x - 1);
  }
  NEXT(x);
}

int64_t call_host(int64_t* env, int64_t x) { NEXT(stencil_test_add(x) + 1); }

int64_t call_thrower(int64_t* env, int64_t x) {
  int64_t r = stencil_test_throw(x);
  NEXT(r + 1);
}

// A dense switch of values: a lookup table in .rodata..Lswitch.table.lookup (R_X86_64_32S).
int64_t lookup(int64_t* env, int64_t x) {
  int64_t r;
  switch (x) {
    case 0:
      r = 13;
      break;
    case 1:
      r = 42;
      break;
    case 2:
      r = 7;
      break;
    case 3:
      r = 99;
      break;
    case 4:
      r = 1000;
      break;
    case 5:
      r = -5;
      break;
    case 6:
      r = 123456;
      break;
    default:
      r = -1;
  }
  NEXT(r);
}

// A string literal in .rodata.str1.1 (R_X86_64_32).
int64_t greeting(int64_t* env, int64_t x) { NEXT((int64_t)(uintptr_t)"hello, stencil"); }

// A dense switch of code: a jump table of code addresses (R_X86_64_64 against the stencil's
// own text), so its read-only data differs from instance to instance.
int64_t dispatch(int64_t* env, int64_t x) {
  int64_t a = env[1];
  switch (x) {
    case 0:
      a = a * 3;
      break;
    case 1:
      a = a + 1000;
      break;
    case 2:
      a ^= 5;
      break;
    case 3:
      a = a << 2;
      break;
    case 4:
      a = a - 77;
      break;
    case 5:
      a = a / 3;
      break;
    case 6:
      a = a % 7;
      break;
    default:
      a = 0;
  }
  NEXT(a);
}

int64_t done(int64_t* env, int64_t x) { return x; }
