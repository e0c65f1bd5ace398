// securememory internal: scrubbing registers and stack (see scrub.hpp).
//
// Theory of operation. The registers go first, with inline assembly and no
// function call in between: a call could go through a not-yet-resolved PLT
// slot, and the lazy-binding trampoline would save the still-dirty vector
// registers on the stack below us, where the stack scrub would not reach.
// Then a noinline function puts a scrub_stack_bytes array on the stack
// (directly below the caller's frame, where the frames that copied the
// secret lived) and fills it with zeros; the empty asm statement that takes
// the array's address keeps the compiler from removing the "dead" stores.
//
// x86-64: caller-saved GPRs are xor'ed; vector registers are cleared with
// vpxord zmm16-31 + vzeroall on AVX-512 CPUs, vzeroall on AVX CPUs, pxor
// xmm0-15 otherwise. aarch64: v0-v31 and the caller-saved x registers.
// Other architectures: only the stack is scrubbed (documented).
#include "scrub.hpp"

#include <cstring>

namespace securememory::detail {
namespace {

#if defined(__x86_64__)
#define SM_GPR_CLOBBERS "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11"
#define SM_GPR_ZERO                                                                                             \
  "xorl %%eax, %%eax\n\txorl %%ecx, %%ecx\n\txorl %%edx, %%edx\n\txorl %%esi, %%esi\n\txorl %%edi, %%edi\n\t" \
  "xorl %%r8d, %%r8d\n\txorl %%r9d, %%r9d\n\txorl %%r10d, %%r10d\n\txorl %%r11d, %%r11d\n\t"
#define SM_XMM0_15_CLOBBERS                                                                                    \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", \
      "xmm13", "xmm14", "xmm15"

__attribute__((target("avx512f,avx512vl"))) void zero_avx512() noexcept {
  asm volatile(SM_GPR_ZERO
               // An EVEX write to ymmN zeroes all of zmmN, without a 512-bit
               // operation (no frequency penalty).
               "vpxord %%ymm16, %%ymm16, %%ymm16\n\tvpxord %%ymm17, %%ymm17, %%ymm17\n\t"
               "vpxord %%ymm18, %%ymm18, %%ymm18\n\tvpxord %%ymm19, %%ymm19, %%ymm19\n\t"
               "vpxord %%ymm20, %%ymm20, %%ymm20\n\tvpxord %%ymm21, %%ymm21, %%ymm21\n\t"
               "vpxord %%ymm22, %%ymm22, %%ymm22\n\tvpxord %%ymm23, %%ymm23, %%ymm23\n\t"
               "vpxord %%ymm24, %%ymm24, %%ymm24\n\tvpxord %%ymm25, %%ymm25, %%ymm25\n\t"
               "vpxord %%ymm26, %%ymm26, %%ymm26\n\tvpxord %%ymm27, %%ymm27, %%ymm27\n\t"
               "vpxord %%ymm28, %%ymm28, %%ymm28\n\tvpxord %%ymm29, %%ymm29, %%ymm29\n\t"
               "vpxord %%ymm30, %%ymm30, %%ymm30\n\tvpxord %%ymm31, %%ymm31, %%ymm31\n\t"
               "vzeroall"
               :
               :
               : SM_GPR_CLOBBERS, SM_XMM0_15_CLOBBERS, "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21",
                 "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
}

__attribute__((target("avx"))) void zero_avx() noexcept {
  asm volatile(SM_GPR_ZERO "vzeroall" : : : SM_GPR_CLOBBERS, SM_XMM0_15_CLOBBERS);
}

void zero_sse() noexcept {
  asm volatile(SM_GPR_ZERO
               "pxor %%xmm0, %%xmm0\n\tpxor %%xmm1, %%xmm1\n\tpxor %%xmm2, %%xmm2\n\tpxor %%xmm3, %%xmm3\n\t"
               "pxor %%xmm4, %%xmm4\n\tpxor %%xmm5, %%xmm5\n\tpxor %%xmm6, %%xmm6\n\tpxor %%xmm7, %%xmm7\n\t"
               "pxor %%xmm8, %%xmm8\n\tpxor %%xmm9, %%xmm9\n\tpxor %%xmm10, %%xmm10\n\tpxor %%xmm11, %%xmm11\n\t"
               "pxor %%xmm12, %%xmm12\n\tpxor %%xmm13, %%xmm13\n\tpxor %%xmm14, %%xmm14\n\tpxor %%xmm15, %%xmm15"
               :
               :
               : SM_GPR_CLOBBERS, SM_XMM0_15_CLOBBERS);
}

enum class vector_kind : unsigned char { sse, avx, avx512 };

vector_kind detect() noexcept {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return vector_kind::avx512;
  if (__builtin_cpu_supports("avx")) return vector_kind::avx;
  return vector_kind::sse;
}

// Decided once, before main(), so the first scrub needs no lazy work.
const vector_kind cpu_vectors = detect();

// Always inlined into scrub_registers_and_stack: no call (and so no PLT
// trampoline) between the copy's return and the zeroing.
[[gnu::always_inline]] inline void zero_registers() noexcept {
  switch (cpu_vectors) {
    case vector_kind::avx512: zero_avx512(); break;
    case vector_kind::avx: zero_avx(); break;
    case vector_kind::sse: zero_sse(); break;
  }
}
#elif defined(__aarch64__)
[[gnu::always_inline]] inline void zero_registers() noexcept {
  asm volatile(
      "movi v0.16b, #0\n\tmovi v1.16b, #0\n\tmovi v2.16b, #0\n\tmovi v3.16b, #0\n\t"
      "movi v4.16b, #0\n\tmovi v5.16b, #0\n\tmovi v6.16b, #0\n\tmovi v7.16b, #0\n\t"
      "movi v16.16b, #0\n\tmovi v17.16b, #0\n\tmovi v18.16b, #0\n\tmovi v19.16b, #0\n\t"
      "movi v20.16b, #0\n\tmovi v21.16b, #0\n\tmovi v22.16b, #0\n\tmovi v23.16b, #0\n\t"
      "movi v24.16b, #0\n\tmovi v25.16b, #0\n\tmovi v26.16b, #0\n\tmovi v27.16b, #0\n\t"
      "movi v28.16b, #0\n\tmovi v29.16b, #0\n\tmovi v30.16b, #0\n\tmovi v31.16b, #0\n\t"
      "mov x9, xzr\n\tmov x10, xzr\n\tmov x11, xzr\n\tmov x12, xzr\n\tmov x13, xzr\n\tmov x14, xzr\n\t"
      "mov x15, xzr"
      :
      :
      : "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23",
        "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31", "x9", "x10", "x11", "x12", "x13", "x14", "x15");
}
#else
inline void zero_registers() noexcept {}
#endif

template <std::size_t Bytes>
[[gnu::noinline]] void zero_stack() noexcept {
  unsigned char area[Bytes];  // NOLINT(modernize-avoid-c-arrays): the stack area to zero
  std::memset(area, 0, sizeof area);
  asm volatile("" : : "r"(area) : "memory");  // the stores are observable: keep them
}

}  // namespace

void scrub_registers_and_stack() noexcept {
  zero_registers();
  zero_stack<scrub_stack_bytes>();
  // memset leaves only zeros in the registers it used.
}

void scrub_after_cipher() noexcept {
  zero_registers();
  zero_stack<scrub_cipher_stack_bytes>();
}

void scrub_registers() noexcept { zero_registers(); }

void scrub_after_aes() noexcept {
  zero_registers();
  zero_stack<scrub_aes_stack_bytes>();
}

}  // namespace securememory::detail
