// The one Lisp runtime of a fuzzer process (lisp::Runtime::create allows one per process),
// made on first use on the calling thread. LISP_TIER_UP chooses the tiers as for the `lisp`
// command (docs/tiers.md); `tier_up` is the default.
#pragma once

#include <cstdint>

#include "examples/lisp/runtime.h"

namespace fuzz {

lisp::Runtime& lisp_runtime(int64_t tier_up);

}  // namespace fuzz
