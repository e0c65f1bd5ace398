// securememory: sealed's allocators' memory from the kernel (memory.hpp).
#include "backends/sealed/memory.hpp"

#include "internal.hpp"
#include "locked_pages.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <cerrno>
#include <cstdint>
#include <new>

namespace securememory::detail::sealed_parts {
namespace {

constexpr memory_user scratch_user{"plaintext scratch", "sealed", 0};
constexpr memory_user arena_user{"sealed ciphertext", "sealed", 0};

// --- where the allocators get their memory (the kernel) ----------------------------

std::byte* reserve_scratch(std::size_t bytes) {
  void* p = os::map_anonymous(bytes);
  if (p == nullptr) throw_map_failed(errno, "mmap", bytes, scratch_user);
  try {
    advise_secret_pages(p, bytes, on_fork::wipe, scratch_user);
  } catch (...) {
    (void)os::unmap(p, bytes);  // nothing written yet
    throw;
  }
  return static_cast<std::byte*>(p);
}

bool lock_scratch(std::byte* p, std::size_t bytes) {
  try {
    lock_pages(p, bytes, scratch_user);
    return true;
  } catch (const error& e) {
    if (e.code_value() == errc::memlock_limit) return false;  // share another slab instead
    throw;
  }
}

std::byte* map_dedicated_scratch(std::size_t bytes) { return static_cast<std::byte*>(map_locked(bytes, scratch_user)); }

void unmap_dedicated_scratch(std::byte* p, std::size_t bytes) noexcept { (void)unmap_locked(p, bytes); }

bool unlock_scratch(std::byte* p, std::size_t bytes) noexcept { return os::unlock(p, bytes) == 0; }

// A huge block is placed on a 2 MiB boundary (a larger reservation,
// trimmed) and advised MADV_HUGEPAGE, so the kernel can back it with one
// transparent huge page; where it cannot (THP off) it is plain pages.
std::byte* map_slot_block(std::size_t bytes) {
  if (bytes < slot_arena::huge_block_bytes) {
    void* p = os::map_anonymous(bytes);
    if (p == nullptr) throw_map_failed(errno, "mmap", bytes, arena_user);
    return static_cast<std::byte*>(p);
  }
  constexpr std::size_t huge = slot_arena::huge_block_bytes;
  void* p = os::map_anonymous(bytes + huge);
  if (p == nullptr) throw_map_failed(errno, "mmap", bytes + huge, arena_user);
  auto* raw = static_cast<std::byte*>(p);
  const auto at = (reinterpret_cast<std::uintptr_t>(raw) + huge - 1) & ~std::uintptr_t{huge - 1};
  std::byte* block = raw + (at - reinterpret_cast<std::uintptr_t>(raw));
  // Untouched address space: a failed trim only leaves it reserved.
  if (block > raw) (void)os::unmap(raw, static_cast<std::size_t>(block - raw));
  if (block + bytes < raw + bytes + huge) (void)os::unmap(block + bytes, static_cast<std::size_t>(raw + huge - block));
  (void)os::prefer_huge_pages(block, bytes);  // a hint: plain pages where THP is off
  return block;
}

std::byte* allocate_large_slot(std::size_t bytes) noexcept {
  return static_cast<std::byte*>(::operator new(bytes, std::nothrow));
}

void free_large_slot(std::byte* p, std::size_t /*bytes*/) noexcept { ::operator delete(p); }

}  // namespace

scratch& the_scratch() {
  static auto* s = new scratch(scratch_memory{reserve_scratch, lock_scratch, map_dedicated_scratch,
                                              unmap_dedicated_scratch, unlock_scratch},
                               os::page_size(), scratch::default_slab_count());  // never destroyed
  return *s;
}

slot_arena& the_slots() {
  static auto* a = new slot_arena(slot_memory{map_slot_block, allocate_large_slot, free_large_slot});  // never destroyed
  return *a;
}

}  // namespace securememory::detail::sealed_parts
