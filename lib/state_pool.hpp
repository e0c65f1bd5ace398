// securememory internal: fixed-size blocks for the per-secret state.
//
// Every live secret owns one state_block_size-byte block (lib/secret.cpp).
// Taking it from malloc costs a 16-byte header and rounding on top (a
// 64-byte object occupies 80 bytes of heap in glibc); a process holding
// 100,000 sealed secrets pays that per secret. See state_pool.cpp.
#pragma once

#include <cstddef>

namespace securememory::detail::state_pool {

/// Size and alignment of a block: one cache line, so the states of two
/// secrets never share a line (threads using different secrets do not slow
/// each other down through false sharing).
inline constexpr std::size_t block_size = 64;

/// A block of block_size bytes, aligned to block_size, uninitialised.
/// Throws error(out_of_memory) when no memory is left.
[[nodiscard]] void* take();

/// Marks a block from take() as holding a constructed object, which
/// for_each_in_use() then visits (until give()). Never throws.
void publish(void* block) noexcept;

/// Gives a block from take() back for reuse (and unpublishes it). Never
/// throws.
void give(void* block) noexcept;

/// Calls visit(block, context) for every block published and not given
/// back. With `locked`, under the pool's lock (visit must then not take or
/// give blocks); without, for a signal handler: no lock, no allocation,
/// only atomic loads, so a block taken or given meanwhile may be missed or
/// seen (what it holds is the caller's to judge).
using block_visitor = void (*)(void* block, void* context) noexcept;
void for_each_in_use(block_visitor visit, void* context, bool locked) noexcept;

/// Blocks handed out and not given back, and blocks obtained from the
/// system in total (in use + free). For tests.
struct usage {
  std::size_t in_use = 0;
  std::size_t reserved = 0;
};
[[nodiscard]] usage stats() noexcept;

}  // namespace securememory::detail::state_pool
