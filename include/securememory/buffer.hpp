// securememory: WipingBuffer, ordinary memory that zeroes itself.
//
// For bytes that must leave protected memory for a while (what
// Reader::read copies out, a key handed to an API that takes a pointer):
// the buffer is wiped (libsodium's sodium_memzero, which the compiler
// cannot drop) when it is destroyed, resized or cleared. It is NOT locked,
// dump-excluded or protected: prefer Secret::with_bytes, which needs no
// copy at all.
#pragma once

#include <securememory/config.hpp>

#include <cstddef>
#include <span>

namespace securememory {

/// A heap buffer of bytes, zeroed when it is created and wiped when it is
/// destroyed, cleared or resized. Move-only. Not thread-safe (like a
/// std::vector).
class SECUREMEMORY_API WipingBuffer {
 public:
  WipingBuffer() noexcept = default;
  /// `size` zero bytes. Throws Error(out_of_memory).
  explicit WipingBuffer(std::size_t size);
  WipingBuffer(WipingBuffer&& other) noexcept;
  /// Wipes this buffer's bytes, then takes other's.
  WipingBuffer& operator=(WipingBuffer&& other) noexcept;
  WipingBuffer(const WipingBuffer&) = delete;
  WipingBuffer& operator=(const WipingBuffer&) = delete;
  /// Wipes the bytes, then frees them.
  ~WipingBuffer();

  [[nodiscard]] std::byte* data() noexcept { return data_; }
  [[nodiscard]] const std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::span<std::byte> bytes() noexcept { return {data_, size_}; }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  operator std::span<std::byte>() noexcept { return bytes(); }  // NOLINT(google-explicit-constructor): a buffer is a span
  operator std::span<const std::byte>() const noexcept { return bytes(); }  // NOLINT(google-explicit-constructor)

  /// Wipes every byte and frees the memory (size 0).
  void clear() noexcept;
  /// Keeps the first min(size(), new_size) bytes (moved to new memory, the
  /// old wiped); new bytes are zero. Throws Error(out_of_memory) and then
  /// changes nothing.
  void resize(std::size_t new_size);

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace securememory
