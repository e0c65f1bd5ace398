// Test support: how deep below its caller a function writes on the stack.
//
// The stack below the current stack pointer is painted with a pattern, the
// function runs, and the painted area is scanned from its bottom for the
// first byte that changed. Used to check that scrub_after_cipher() reaches
// as deep as the ciphers and the generator write (lib/scrub.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace test {

inline constexpr std::size_t probe_bytes = 16384;  // painted below the caller
inline constexpr std::size_t probe_skip = 128;     // the probe's own frames live here
inline constexpr unsigned char probe_paint = 0xA5;

enum class probe_kind : unsigned char {
  written,  ///< any byte that is no longer the paint
  residue,  ///< a byte that is neither the paint nor zero (what a scrub did not erase)
};

[[gnu::always_inline]] inline unsigned char* probe_stack_pointer() {
  unsigned char* sp = nullptr;
#if defined(__x86_64__)
  asm volatile("mov %%rsp, %0" : "=r"(sp));
#elif defined(__aarch64__)
  asm volatile("mov %0, sp" : "=r"(sp));
#else
  sp = static_cast<unsigned char*>(__builtin_frame_address(0));
#endif
  return sp;
}

[[gnu::noinline]] __attribute__((no_sanitize("address", "thread"))) inline void probe_paint_below(unsigned char* sp) {
  volatile unsigned char* p = sp - probe_bytes;
  for (std::size_t i = 0; i < probe_bytes - probe_skip; ++i) p[i] = probe_paint;
}

[[gnu::noinline]] __attribute__((no_sanitize("address", "thread"))) inline std::size_t probe_scan_below(
    unsigned char* sp, probe_kind kind) {
  const volatile unsigned char* p = sp - probe_bytes;
  for (std::size_t i = 0; i < probe_bytes - probe_skip; ++i) {
    const unsigned char b = p[i];
    if (b != probe_paint && (kind == probe_kind::written || b != 0)) return probe_bytes - i;
  }
  return 0;
}

/// Bytes below the caller's stack pointer that fn left changed (written) or
/// neither painted nor zero (residue); 0 when it did not go below the probe's
/// own frames. fn runs once before the measurement, so that a lazily bound
/// function's first call (the dynamic linker's trampoline saves every vector
/// register on the stack: about 3 KiB with AVX-512) is not what is measured;
/// the library itself is linked with -z now.
[[gnu::noinline]] inline std::size_t stack_depth(const std::function<void()>& fn, probe_kind kind) {
  fn();
  unsigned char* sp = probe_stack_pointer();
  probe_paint_below(sp);
  fn();
  return probe_scan_below(sp, kind);
}

}  // namespace test
