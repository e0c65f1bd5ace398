// securememory: sealed's ciphertext slots (see slots.hpp).
//
// Theory of operation: one free list and one bump pointer per size class,
// under one mutex. A large slot is its own block; the allocator never
// touches it (its first write is the ciphertext), so a request that fails
// later in the creation costs no memory.
#include "backends/sealed/slots.hpp"

#include "internal.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <cstring>
#include <mutex>

namespace securememory::detail::sealed_parts {

std::byte* slot_arena::take(std::size_t size) {
  if (size > max_class_slot) {
    std::byte* p = memory_.allocate_large(size);
    if (p == nullptr) {
      throw error(errc::out_of_memory,
                  fmt::format("cannot allocate {} bytes for a sealed secret's ciphertext: out of memory", size));
    }
    const std::lock_guard lock(mutex_);
    ++usage_.live_slots;
    usage_.slot_bytes += size;
    usage_.arena_bytes += size;
    return p;
  }
  const std::lock_guard lock(mutex_);
  size_class& c = classes_[size / align];
  std::byte* slot = c.free_head;
  if (slot != nullptr) {
    std::memcpy(&c.free_head, slot, sizeof(std::byte*));
    sodium_memzero(slot, sizeof(std::byte*));
  } else {
    if (c.bump == nullptr || static_cast<std::size_t>(c.bump_end - c.bump) < size) {
      const std::size_t bytes = c.blocks < small_blocks ? small_block_bytes : huge_block_bytes;
      std::byte* block = memory_.map_block(bytes);  // throws
      ++c.blocks;
      c.bump = block;
      c.bump_end = block + bytes;
    }
    slot = c.bump;
    c.bump += size;
    usage_.arena_bytes += size;
  }
  ++usage_.live_slots;
  usage_.slot_bytes += size;
  return slot;
}

void slot_arena::give(std::byte* slot, std::size_t size, bool written, bool reuse) noexcept {
  if (written) sodium_memzero(slot, size);
  const bool large = size > max_class_slot;
  {
    const std::lock_guard lock(mutex_);
    --usage_.live_slots;
    usage_.slot_bytes -= size;
    if (!reuse) return;  // quarantined: wiped, never handed out again
    if (large) {
      usage_.arena_bytes -= size;
    } else {
      size_class& c = classes_[size / align];
      std::memcpy(slot, &c.free_head, sizeof(std::byte*));
      c.free_head = slot;
    }
  }
  if (large) memory_.free_large(slot, size);
}

slot_usage slot_arena::usage() noexcept {
  const std::lock_guard lock(mutex_);
  return usage_;
}

}  // namespace securememory::detail::sealed_parts
