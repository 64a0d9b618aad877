// codeheap::Error -> llvm::Error, for everything in jit/ that calls into the code heap.
//
// codeheap/ links no LLVM, so it reports failures as codeheap::Error; jit/ speaks llvm::Error.
// The conversion keeps the heap's ErrorCode in a dedicated ErrorInfo type instead of flattening
// it into a string, so a caller can react to one kind of failure and pass the rest on, e.g. run
// a garbage collection and a reclaim pass when a link fails for lack of code space:
//
//   if (auto err = engine.add_module(...).takeError())
//     err = llvm::handleErrors(std::move(err), [&](const HeapError& e) -> llvm::Error {
//       if (e.code() != ErrorCode::kOutOfMemory) return llvm::make_error<HeapError>(e.error());
//       ...collect, reclaim, retry...
//     });
#pragma once

#include <string>
#include <system_error>
#include <utility>

#include "codeheap/error.h"
#include "llvm/Support/Error.h"

namespace codeheap::jit {

class HeapError : public llvm::ErrorInfo<HeapError> {
 public:
  static char ID;

  explicit HeapError(codeheap::Error error) : error_(std::move(error)) {}

  ErrorCode code() const { return error_.code; }
  const codeheap::Error& error() const { return error_; }

  // "code heap: <code>: <message>"
  void log(llvm::raw_ostream& os) const override;
  std::error_code convertToErrorCode() const override;

 private:
  codeheap::Error error_;
};

inline llvm::Error to_llvm_error(codeheap::Error error) {
  return llvm::make_error<HeapError>(std::move(error));
}

inline llvm::Error to_llvm_error(codeheap::Result<void> result) {
  if (result) return llvm::Error::success();
  return to_llvm_error(std::move(result.error()));
}

// True if `error` holds a HeapError with ErrorCode::kOutOfMemory (alone or in an ErrorList):
// the heap had no room, and collecting garbage may make some. `error` keeps every error it held.
bool is_out_of_memory(llvm::Error& error);

template <typename T>
llvm::Expected<T> to_expected(codeheap::Result<T> result) {
  if (result) return std::move(*result);
  return to_llvm_error(std::move(result.error()));
}

}  // namespace codeheap::jit
