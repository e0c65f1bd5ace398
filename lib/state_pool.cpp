// securememory: the pool of per-secret state blocks (see state_pool.hpp).
//
// Theory of operation. Blocks of 64 bytes are carved out of 64 KiB chunks
// obtained from operator new (aligned to 64) and never returned to the
// system: a chunk's first block holds the link to the previous chunk, so
// every chunk stays reachable (LeakSanitizer) from one global, and the other
// 1023 blocks are handed out. Free blocks form a LIFO list threaded through
// the blocks themselves; one small_mutex guards the list (two system calls
// per created secret dwarf it). The mutex is taken around fork() so a child
// never inherits it locked. Under AddressSanitizer a free block is poisoned,
// so a use of a secret's state after it was freed is still reported.
//
// Cost: 64 bytes per live secret plus 64 bytes per 1023 (chunk header);
// memory of freed blocks is kept for the next secrets (a process that once
// held N secrets keeps N x 64 bytes reserved).
#include "state_pool.hpp"

#include "small_mutex.hpp"

#include <securememory/error.hpp>

#include <mutex>
#include <new>
#include <pthread.h>

#if defined(__SANITIZE_ADDRESS__)
#define SECUREMEMORY_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SECUREMEMORY_POOL_ASAN 1
#endif
#endif

#if defined(SECUREMEMORY_POOL_ASAN)
#include <sanitizer/asan_interface.h>
#define POOL_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define POOL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POOL_POISON(p, n) ((void)(p), (void)(n))
#define POOL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace securememory::detail::state_pool {
namespace {

constexpr std::size_t chunk_bytes = std::size_t{64} * 1024;
constexpr std::size_t blocks_per_chunk = chunk_bytes / block_size;

struct free_block {
  free_block* next;
};

struct chunk_header {
  chunk_header* previous;
};

struct pool {
  small_mutex mutex;
  free_block* free = nullptr;
  chunk_header* chunks = nullptr;
  std::size_t in_use = 0;
  std::size_t reserved = 0;
};

void lock_pool() noexcept;
void unlock_pool() noexcept;

pool& the_pool() noexcept {
  // Never destroyed: secrets in static objects are freed during exit.
  alignas(pool) static unsigned char storage[sizeof(pool)];  // NOLINT(*-avoid-c-arrays): raw storage, never destroyed
  static pool* const p = [] {
    auto* created = new (storage) pool();
    pthread_atfork(lock_pool, unlock_pool, unlock_pool);
    return created;
  }();
  return *p;
}

void lock_pool() noexcept { the_pool().mutex.lock(); }
void unlock_pool() noexcept { the_pool().mutex.unlock(); }

// With the lock held: a new chunk's blocks go to the free list.
bool add_chunk_locked(pool& p) noexcept {
  void* memory = ::operator new(chunk_bytes, std::align_val_t{block_size}, std::nothrow);
  if (memory == nullptr) return false;
  auto* bytes = static_cast<std::byte*>(memory);
  auto* header = new (bytes) chunk_header{p.chunks};
  p.chunks = header;
  for (std::size_t i = blocks_per_chunk - 1; i >= 1; --i) {
    auto* block = new (bytes + i * block_size) free_block{p.free};
    p.free = block;
    POOL_POISON(block, block_size);
  }
  p.reserved += blocks_per_chunk - 1;
  return true;
}

}  // namespace

void* take() {
  pool& p = the_pool();
  {
    const std::lock_guard lock(p.mutex);
    if (p.free != nullptr || add_chunk_locked(p)) {
      free_block* block = p.free;
      POOL_UNPOISON(block, block_size);
      p.free = block->next;
      ++p.in_use;
      return block;
    }
  }
  throw error(errc::out_of_memory, "cannot allocate the 64-byte state of a secret: out of memory");
}

void give(void* block) noexcept {
  if (block == nullptr) return;
  pool& p = the_pool();
  const std::lock_guard lock(p.mutex);
  auto* freed = new (block) free_block{p.free};
  POOL_POISON(freed, block_size);
  p.free = freed;
  --p.in_use;
}

usage stats() noexcept {
  pool& p = the_pool();
  const std::lock_guard lock(p.mutex);
  return {p.in_use, p.reserved};
}

}  // namespace securememory::detail::state_pool
