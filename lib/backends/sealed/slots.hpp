// securememory internal: sealed's ciphertext slots.
//
// Layout: slots of one size class (a multiple of 8 bytes, up to 1024) are
// carved from blocks of plain memory (not locked: they hold only
// ciphertext), one size class per block: a class's first 32 blocks (8 MiB) are
// 256 KiB, its later ones 2 MiB, which the memory source maps as one
// transparent huge page where it can (a process with many secrets then
// needs one TLB entry per 2 MiB of ciphertext instead of 512: with 1,000,000
// live secrets a random with_bytes missed the TLB on its slot); a free slot holds the link to the
// next free slot of its class in its first 8 bytes (wiped when it is handed
// out). Slots larger than 1024 bytes are blocks of their own.
//
// Cost per slot: its size, rounded to 8; nothing per slot in bookkeeping.
// Memory comes from an injected slot_memory, so the allocator runs on plain
// memory in unit tests. One mutex guards the free lists and blocks.
#pragma once

#include "small_mutex.hpp"

#include <array>
#include <cstddef>

namespace securememory::detail::sealed_parts {

/// Where the slots get their memory.
struct slot_memory {
  /// A zeroed block of `bytes` (whole pages: small_block_bytes or
  /// huge_block_bytes) for small slots, never given back. Throws
  /// error(out_of_memory).
  std::byte* (*map_block)(std::size_t bytes);
  /// A block of its own for one large slot; nullptr when out of memory.
  /// Not touched by the allocator until the slot is written.
  std::byte* (*allocate_large)(std::size_t bytes) noexcept;
  void (*free_large)(std::byte* p, std::size_t bytes) noexcept;
};

/// What the slots hold now.
struct slot_usage {
  std::size_t live_slots = 0;   ///< Slots handed out.
  std::size_t slot_bytes = 0;   ///< Bytes of those slots.
  std::size_t arena_bytes = 0;  ///< Bytes carved into slots so far (live, free or quarantined), plus large blocks.
};

class slot_arena {
 public:
  static constexpr std::size_t align = 8;
  static constexpr std::size_t max_class_slot = 1024;  ///< larger slots are blocks of their own
  static constexpr std::size_t small_block_bytes = std::size_t{256} * 1024;
  static constexpr std::size_t huge_block_bytes = std::size_t{2} * 1024 * 1024;
  static constexpr std::size_t small_blocks = 32;  ///< per class (8 MiB), before its blocks are huge

  explicit slot_arena(const slot_memory& memory) noexcept : memory_(memory) {}
  slot_arena(const slot_arena&) = delete;
  slot_arena& operator=(const slot_arena&) = delete;
  ~slot_arena() = delete;  // lives as long as the process

  /// A slot of `size` bytes (a multiple of 8). Small slots are zero. Throws
  /// error(out_of_memory).
  [[nodiscard]] std::byte* take(std::size_t size);

  /// Gives a slot back: wiped when `written` (a slot never written holds
  /// nothing, and wiping a large one would touch all its pages), then
  /// reused, or, when !reuse (quarantine), kept out of use for good.
  void give(std::byte* slot, std::size_t size, bool written, bool reuse) noexcept;

  [[nodiscard]] slot_usage usage() noexcept;

  /// fork(): held across the fork so a child never inherits it locked.
  void lock_for_fork() noexcept { mutex_.lock(); }
  void unlock_after_fork() noexcept { mutex_.unlock(); }

 private:
  struct size_class {
    std::byte* free_head = nullptr;  // linked through the first 8 bytes of free slots
    std::byte* bump = nullptr;
    std::byte* bump_end = nullptr;
    std::size_t blocks = 0;
  };
  slot_memory memory_;
  small_mutex mutex_;
  std::array<size_class, max_class_slot / align + 1> classes_{};
  slot_usage usage_{};
};

}  // namespace securememory::detail::sealed_parts
