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
/// ChaCha20 (1.7 KiB below the caller) and ChaCha20-Poly1305 (2.2 KiB)
/// frames, as test/random-test.cpp and test/sealed-key-test.cpp measure
/// them (they fail when a cipher writes deeper than the scrub reaches).
inline constexpr std::size_t scrub_cipher_stack_bytes = 4096;

/// scrub_registers_and_stack() for the path of every sealed access and
/// random draw: the registers, then scrub_cipher_stack_bytes of stack. Call
/// it right after a cipher call that had plaintext, a key or key stream in
/// hand.
void scrub_after_cipher() noexcept;

/// Bytes of stack scrub_after_aes() overwrites: libsodium's AES-256-GCM
/// with AES-NI writes 0.5 KiB below its caller (measured as above).
inline constexpr std::size_t scrub_aes_stack_bytes = 1024;

/// scrub_after_cipher() for AES-256-GCM (crypto_aead_aes256gcm_*_afternm),
/// which keeps its blocks in vector registers and needs less stack.
void scrub_after_aes() noexcept;

/// Zeroes the registers scrub_registers_and_stack() zeroes, and no stack:
/// after a copy (memcpy) that went through vector registers only.
void scrub_registers() noexcept;

/// Runs scrub_registers_and_stack() when the enclosing scope ends, on the
/// normal and on the exceptional path.
struct scrub_on_exit {
  scrub_on_exit() = default;
  scrub_on_exit(const scrub_on_exit&) = delete;
  scrub_on_exit& operator=(const scrub_on_exit&) = delete;
  ~scrub_on_exit() { scrub_registers_and_stack(); }
};

}  // namespace securememory::detail
