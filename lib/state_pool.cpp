// securememory: the pool of per-secret state blocks (see state_pool.hpp).
//
// Theory of operation. Blocks of 64 bytes are carved out of 64 KiB chunks
// obtained from operator new (aligned to 64) and never returned to the
// system: a chunk's first three blocks hold the link to the previous chunk
// (so every chunk stays reachable, for LeakSanitizer, from one global) and
// a bitmap of the blocks in use (so purge() can find every live secret),
// and the other 1021 blocks are handed out. Free blocks form a LIFO list threaded through
// the blocks themselves; one small_mutex guards the list (two system calls
// per created secret dwarf it). The mutex is taken around fork() so a child
// never inherits it locked. Under AddressSanitizer a free block is poisoned,
// so a use of a secret's state after it was freed is still reported.
//
// Cost: 64 bytes per live secret plus 192 bytes per 1021 (chunk header);
// memory of freed blocks is kept for the next secrets (a process that once
// held N secrets keeps N x 64 bytes reserved).
#include "state_pool.hpp"

#include "internal.hpp"

#include "small_mutex.hpp"

#include <securememory/error.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <mutex>
#include <new>
#include <pthread.h>
#include <utility>
#include <vector>

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

constexpr std::size_t header_blocks = 3;

struct chunk_header {
  chunk_header* previous;
  std::atomic<std::uint64_t> in_use[blocks_per_chunk / 64];  // NOLINT(*-avoid-c-arrays): bit i: block i is handed out
};
static_assert(sizeof(chunk_header) <= header_blocks * block_size);



struct pool {
  small_mutex mutex;
  std::vector<chunk_header*> sorted;  // every chunk, by address: a block's chunk by binary search
  free_block* free = nullptr;
  std::atomic<chunk_header*> chunks{nullptr};  // atomic: walked without the lock by a signal handler
  std::size_t in_use = 0;
  std::size_t reserved = 0;
};

void lock_pool() noexcept;
void unlock_pool() noexcept;

// With the lock held: the chunk holding a block, and the block's index in it.
std::pair<chunk_header*, std::size_t> locate_locked(const pool& p, const void* block) noexcept {
  const auto* b = static_cast<const std::byte*>(block);
  auto it = std::upper_bound(p.sorted.begin(), p.sorted.end(), b,
                             [](const std::byte* x, const chunk_header* c) { return x < reinterpret_cast<const std::byte*>(c); });
  chunk_header* c = *std::prev(it);  // a block always lies in a chunk that starts before it
  return {c, static_cast<std::size_t>(b - reinterpret_cast<const std::byte*>(c)) / block_size};
}

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

namespace {
// Made while the library loads (detail::made_at_load): a forked child never
// finds it half-made by a thread it does not have.
// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool pool_made_at_load = detail::made_at_load([] { (void)the_pool(); });
}  // namespace

void lock_pool() noexcept { the_pool().mutex.lock(); }
void unlock_pool() noexcept { the_pool().mutex.unlock(); }

// With the lock held: a new chunk's blocks go to the free list.
bool add_chunk_locked(pool& p) noexcept {
  void* memory = ::operator new(chunk_bytes, std::align_val_t{block_size}, std::nothrow);
  if (memory == nullptr) return false;
  auto* bytes = static_cast<std::byte*>(memory);
  try {
    p.sorted.insert(std::upper_bound(p.sorted.begin(), p.sorted.end(), reinterpret_cast<chunk_header*>(bytes)),
                    reinterpret_cast<chunk_header*>(bytes));
  } catch (...) {
    ::operator delete(memory, std::align_val_t{block_size});
    return false;
  }
  auto* header = new (bytes) chunk_header{p.chunks.load(std::memory_order_relaxed), {}};
  p.chunks.store(header, std::memory_order_release);
  for (std::size_t i = blocks_per_chunk - 1; i >= header_blocks; --i) {
    auto* block = new (bytes + i * block_size) free_block{p.free};
    p.free = block;
    POOL_POISON(block, block_size);
  }
  p.reserved += blocks_per_chunk - header_blocks;
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

void publish(void* block) noexcept {
  pool& p = the_pool();
  const std::lock_guard lock(p.mutex);
  const auto [chunk, i] = locate_locked(p, block);
  chunk->in_use[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_release);
}

void give(void* block) noexcept {
  if (block == nullptr) return;
  pool& p = the_pool();
  const std::lock_guard lock(p.mutex);
  const auto [chunk, i] = locate_locked(p, block);
  chunk->in_use[i / 64].fetch_and(~(std::uint64_t{1} << (i % 64)), std::memory_order_release);
  auto* freed = new (block) free_block{p.free};
  POOL_POISON(freed, block_size);
  p.free = freed;
  --p.in_use;
}

void for_each_in_use(block_visitor visit, void* context, bool locked) noexcept {
  pool& p = the_pool();
  if (locked) p.mutex.lock();
  for (chunk_header* c = p.chunks.load(std::memory_order_acquire); c != nullptr; c = c->previous) {
    auto* bytes = reinterpret_cast<std::byte*>(c);
    for (std::size_t w = 0; w < blocks_per_chunk / 64; ++w) {
      for (std::uint64_t bits = c->in_use[w].load(std::memory_order_acquire); bits != 0; bits &= bits - 1) {
        visit(bytes + (w * 64 + static_cast<std::size_t>(std::countr_zero(bits))) * block_size, context);
      }
    }
  }
  if (locked) p.mutex.unlock();
}

usage stats() noexcept {
  pool& p = the_pool();
  const std::lock_guard lock(p.mutex);
  return {p.in_use, p.reserved};
}

}  // namespace securememory::detail::state_pool
