#include "jit/error.h"

#include "llvm/Support/raw_ostream.h"

namespace codeheap::jit {

char HeapError::ID = 0;

void HeapError::log(llvm::raw_ostream& os) const {
  os << "code heap: " << to_string(error_.code) << ": " << error_.message;
}

std::error_code HeapError::convertToErrorCode() const { return llvm::inconvertibleErrorCode(); }

}  // namespace codeheap::jit
