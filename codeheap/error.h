// Errors of the code heap. codeheap/ links neither LLVM nor Boehm, so it reports failures
// as codeheap::Error values inside tl::expected; jit/ converts them to llvm::Error.
#pragma once

#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace codeheap {

enum class ErrorCode {
  kInvalidArgument,  // zero size, absurd size or alignment, unknown arena, bad options
  kOutOfMemory,      // no free block is large enough (message names requested/free/largest)
  kPlacementFailed,  // the low reservation could not be made (never falls back high)
  kDoubleRelease,    // the block is already in quarantine
  kForeignAddress,   // address is not the start of a block of this heap
  kSystemError,      // mmap/mremap/mprotect/madvise failed; message carries errno text
  kForkedChild,      // the heap was made before fork(): its memory is not in this child
};

const char* to_string(ErrorCode code);

struct Error {
  ErrorCode code;
  std::string message;
};

template <typename T>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> make_error(ErrorCode code, std::string message) {
  return tl::make_unexpected(Error{code, std::move(message)});
}

}  // namespace codeheap
