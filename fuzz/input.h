// Input: the fuzz bytes read front to back as decisions. Once they are used up every read
// gives 0, so every input, the empty one included, decodes to a finite, valid sequence.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  uint8_t byte() { return empty() ? 0 : data_[pos_++]; }
  // Little-endian, `bytes` (at most 8) of them.
  uint64_t word(int bytes) {
    uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) value |= uint64_t{byte()} << (8 * i);
    return value;
  }
  // In [0, n), n > 0; one byte when n <= 256, else two.
  size_t below(size_t n) { return static_cast<size_t>(word(n <= 256 ? 1 : 2) % n); }
  bool coin() { return (byte() & 1) != 0; }
  // Up to `max` bytes: a length byte, then that many bytes (fewer at the end).
  std::string_view bytes(size_t max) {
    const size_t n = std::min(below(max + 1), size_ - pos_);
    std::string_view text(reinterpret_cast<const char*>(data_) + pos_, n);
    pos_ += n;
    return text;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace fuzz
