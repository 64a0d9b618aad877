// Stencils that stencil_tool must refuse (tests/jit/stencil_test.cc), one per -D option.
#include <stdint.h>

#if defined(BAD_DATA)
// A defined global in writable data: each unit would need a copy the emitter cannot give it.
int64_t counter;
int64_t bad_data(int64_t x) { return counter += x; }
#elif defined(BAD_TLS)
extern __thread int64_t tls_counter;
int64_t bad_tls(int64_t x) { return tls_counter += x; }
#elif defined(BAD_CALL)
// A static helper that is not inlined: a call into another .text section.
__attribute__((noinline)) static int64_t helper(int64_t x) { return x * x + 1; }
int64_t bad_call(int64_t x) { return helper(x) + helper(x + 1); }
#endif
