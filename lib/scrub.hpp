// securememory internal: erasing the copies of secret bytes that the CPU
// leaves behind in registers and on the stack.
//
// Copying a secret (memcpy into protected memory, randombytes_buf, the
// Reader's memcpy out) leaves the last bytes moved in vector registers, and
// whatever spills, partial blocks or saved register sets (the dynamic
// linker's lazy-binding trampoline saves every vector register on the stack)
// in the stack below the caller. scrub_registers_and_stack() erases both.
// See docs/design.md ("Registers and stack") for how this was measured.
#pragma once

#include <cstddef>

namespace securememory::detail {

/// Bytes of stack below the caller's frame that scrub_registers_and_stack()
/// overwrites with zeros.
inline constexpr std::size_t scrub_stack_bytes = std::size_t{16} * 1024;

/// Zeroes the caller-saved general-purpose and all vector registers
/// (xmm/ymm/zmm 0-31 as the CPU has them), then scrub_stack_bytes of stack
/// below the caller's frame. Call it from the outermost library function
/// that moved secret bytes, after the copying frames have returned. Never
/// throws; costs about a microsecond.
void scrub_registers_and_stack() noexcept;

/// Bytes of stack scrub_after_cipher() overwrites: enough for libsodium's
/// AEAD frames (measured by the core-dump proofs of the sealed backend).
inline constexpr std::size_t scrub_cipher_stack_bytes = 2048;

/// scrub_registers_and_stack() for the path of every sealed access: the
/// registers, then scrub_cipher_stack_bytes of stack. Call it right after a
/// cipher call that had plaintext or key stream in hand.
void scrub_after_cipher() noexcept;

/// Runs scrub_registers_and_stack() when the enclosing scope ends, on the
/// normal and on the exceptional path.
struct scrub_on_exit {
  scrub_on_exit() = default;
  scrub_on_exit(const scrub_on_exit&) = delete;
  scrub_on_exit& operator=(const scrub_on_exit&) = delete;
  ~scrub_on_exit() { scrub_registers_and_stack(); }
};

}  // namespace securememory::detail
