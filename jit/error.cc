#include "jit/error.h"

#include "llvm/Support/raw_ostream.h"

namespace codeheap::jit {

char HeapError::ID = 0;

void HeapError::log(llvm::raw_ostream& os) const {
  os << "code heap: " << to_string(error_.code) << ": " << error_.message;
}

std::error_code HeapError::convertToErrorCode() const { return llvm::inconvertibleErrorCode(); }

bool is_out_of_memory(llvm::Error& error) {
  bool full = false;
  error = llvm::handleErrors(std::move(error), [&](std::unique_ptr<HeapError> e) -> llvm::Error {
    full = full || e->code() == ErrorCode::kOutOfMemory;
    return llvm::Error(std::move(e));
  });
  return full;
}

}  // namespace codeheap::jit
