#include "codeheap/error.h"

namespace codeheap {

const char* to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kOutOfMemory:
      return "out_of_memory";
    case ErrorCode::kPlacementFailed:
      return "placement_failed";
    case ErrorCode::kDoubleRelease:
      return "double_release";
    case ErrorCode::kForeignAddress:
      return "foreign_address";
    case ErrorCode::kSystemError:
      return "system_error";
    case ErrorCode::kForkedChild:
      return "forked_child";
  }
  return "unknown";
}

}  // namespace codeheap
