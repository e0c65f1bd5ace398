// securememory: sealed's plaintext scratch (see scratch.hpp).
//
// Theory of operation. take(n) looks for ceil(n / C) free contiguous
// chunks in the thread's home slab, then in every other slab already
// locked in this process, each with a CAS on the slab's 64-bit word (no
// lock). When none has room it takes the mutex and locks a slab that is
// not locked yet (home first); a slab the kernel refuses to lock is marked
// refused for this process and not tried again on the fast path. Only then
// does the access get a mapping of its own (dedicated), whose failure is
// the error. give() wipes the bytes, then clears their bits (release), so
// the next owner of a chunk sees it zero.
//
// A slab's `ready` word holds the fork generation (+1) in which its page
// was locked: a forked child inherits the parent's words but not its
// locks, so every slab is locked again before the child puts plaintext in
// it; `taken` is cleared in the child (the parent's accesses do not
// continue there, and the pages are zero: wiped at fork).
//
// Idle slabs are unlocked when the page caches are emptied (release_idle):
// the slab's word is first set to "all taken" with a CAS from 0, so a
// taker that saw the slab ready finds no room and locks another; the word
// is cleared only after the slab is marked not ready.
#include "backends/sealed/scratch.hpp"

#include "internal.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <bit>
#include <mutex>
#include <thread>

namespace securememory::detail::sealed_parts {
namespace {

constexpr unsigned chunks_per_slab = 64;

// Threads are numbered in order of first use of any scratch.
std::size_t thread_number() noexcept {
  static constinit std::atomic<std::size_t> next{0};
  static constinit thread_local std::size_t mine = 0;
  static constinit thread_local bool numbered = false;
  if (!numbered) {
    mine = next.fetch_add(1, std::memory_order_relaxed);
    numbered = true;
  }
  return mine;
}

std::uint64_t current_generation() noexcept { return fork_generation() + 1; }

std::uint64_t run_mask(unsigned k) noexcept { return k >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << k) - 1; }

}  // namespace

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
scratch::scratch(const scratch_memory& memory, std::size_t page, std::size_t slabs)
    : memory_(memory),
      page_(page),
      chunk_(page / chunks_per_slab),
      count_(std::max<std::size_t>(1, slabs)),
      slabs_(std::make_unique<slab[]>(count_)) {}  // NOLINT(*-avoid-c-arrays)

std::size_t scratch::default_slab_count() noexcept {
  const unsigned cpus = std::thread::hardware_concurrency();
  return std::clamp<std::size_t>(std::size_t{2} * std::max(1U, cpus), 4, 32);
}

std::size_t scratch::home() noexcept { return thread_number() % count_; }

std::byte* scratch::chunk_of(std::size_t s, unsigned first) const noexcept {
  return base_.load(std::memory_order_acquire) + s * page_ + std::size_t{first} * chunk_;
}

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
std::byte* scratch::try_take(std::size_t s, unsigned k) noexcept {
  std::atomic<std::uint64_t>& word = slabs_[s].taken;
  const std::uint64_t mask = run_mask(k);
  std::uint64_t bits = word.load(std::memory_order_relaxed);
  for (;;) {
    if (bits == ~std::uint64_t{0}) return nullptr;
    unsigned first = chunks_per_slab;
    for (auto at = static_cast<unsigned>(std::countr_one(bits)); at + k <= chunks_per_slab; ++at) {
      if ((bits & (mask << at)) == 0) {
        first = at;
        break;
      }
    }
    if (first == chunks_per_slab) return nullptr;
    if (word.compare_exchange_weak(bits, bits | (mask << first), std::memory_order_acquire,
                                   std::memory_order_relaxed)) {
      return chunk_of(s, first);
    }
  }
}

void scratch::ensure_reserved() {
  if (base_.load(std::memory_order_acquire) != nullptr) return;
  const std::lock_guard lock(mutex_);
  if (base_.load(std::memory_order_relaxed) == nullptr) base_.store(memory_.reserve(count_ * page_), std::memory_order_release);
}

std::byte* scratch::take(std::size_t n) {
  if (n > page_) return take_dedicated(n);
  ensure_reserved();
  const auto k = static_cast<unsigned>((std::max<std::size_t>(n, 1) + chunk_ - 1) / chunk_);
  const std::uint64_t generation = current_generation();
  const std::size_t h = home();
  // The thread's own slab first, locked now if it is not yet: threads that
  // share a slab share a cache line.
  if (slabs_[h].ready.load(std::memory_order_acquire) == generation) {
    if (std::byte* p = try_take(h, k)) return p;
  } else if (slabs_[h].refused.load(std::memory_order_relaxed) != generation) {
    if (std::byte* p = activate_and_take(h, 1, k, generation)) return p;
  }
  // Full or refused: share a slab that is locked already, then lock another.
  for (std::size_t i = 1; i < count_; ++i) {
    const std::size_t s = (h + i) % count_;
    if (slabs_[s].ready.load(std::memory_order_acquire) != generation) continue;
    if (std::byte* p = try_take(s, k)) return p;
  }
  if (std::byte* p = activate_and_take(h, count_, k, generation)) return p;
  return take_dedicated(n);
}

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): a slab index and a count of slabs
std::byte* scratch::activate_and_take(std::size_t home, std::size_t tries, unsigned k, std::uint64_t generation) {
  const std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < tries; ++i) {
    const std::size_t s = (home + i) % count_;
    slab& sl = slabs_[s];
    if (sl.ready.load(std::memory_order_relaxed) == generation) {
      if (std::byte* p = try_take(s, k)) return p;  // freed meanwhile
      continue;
    }
    if (sl.refused.load(std::memory_order_relaxed) == generation) continue;
    if (!memory_.lock(chunk_of(s, 0), page_)) {
      sl.refused.store(generation, std::memory_order_relaxed);
      continue;
    }
    sl.taken.store(0, std::memory_order_relaxed);
    sl.ready.store(generation, std::memory_order_release);
    if (std::byte* p = try_take(s, k)) return p;
  }
  return nullptr;
}

std::byte* scratch::take_dedicated(std::size_t n) {
  const std::size_t length = (n + page_ - 1) / page_ * page_;
  std::byte* p = memory_.map_dedicated(length);
  dedicated_bytes_.fetch_add(length, std::memory_order_relaxed);
  return p;
}

void scratch::give(std::byte* p, std::size_t n) noexcept {
  sodium_memzero(p, n);
  std::byte* base = base_.load(std::memory_order_acquire);
  if (base == nullptr || p < base || p >= base + count_ * page_) {
    const std::size_t length = (n + page_ - 1) / page_ * page_;
    memory_.unmap_dedicated(p, length);
    dedicated_bytes_.fetch_sub(length, std::memory_order_relaxed);
    return;
  }
  const auto offset = static_cast<std::size_t>(p - base);
  const std::size_t s = offset / page_;
  const auto first = static_cast<unsigned>((offset % page_) / chunk_);
  const auto k = static_cast<unsigned>((std::max<std::size_t>(n, 1) + chunk_ - 1) / chunk_);
  slabs_[s].taken.fetch_and(~(run_mask(k) << first), std::memory_order_release);
}

std::size_t scratch::release_idle() noexcept {
  if (!mutex_.try_lock()) return 0;
  const std::uint64_t generation = current_generation();
  std::size_t freed = 0;
  for (std::size_t s = 0; s < count_; ++s) {
    slab& sl = slabs_[s];
    if (sl.ready.load(std::memory_order_relaxed) != generation) continue;
    // Claim every chunk, so that no taker can start while it is unlocked;
    // a slab with a chunk in use stays.
    std::uint64_t idle = 0;
    if (!sl.taken.compare_exchange_strong(idle, ~std::uint64_t{0}, std::memory_order_acquire)) continue;
    if (memory_.unlock(chunk_of(s, 0), page_)) {
      sl.ready.store(0, std::memory_order_relaxed);
      freed += page_;
    }  // else still locked: it stays ready (and counted) for the next taker
    sl.taken.store(0, std::memory_order_release);
  }
  mutex_.unlock();
  return freed;
}

void scratch::wipe_in_signal_handler() noexcept {
  std::byte* base = base_.load(std::memory_order_acquire);
  if (base == nullptr) return;
  const std::uint64_t generation = current_generation();
  for (std::size_t s = 0; s < count_; ++s) {
    if (slabs_[s].ready.load(std::memory_order_acquire) == generation) sodium_memzero(base + s * page_, page_);
  }
}

std::size_t scratch::slabs_locked() const noexcept {
  const std::uint64_t generation = current_generation();
  std::size_t n = 0;
  for (std::size_t s = 0; s < count_; ++s) n += slabs_[s].ready.load(std::memory_order_relaxed) == generation ? 1 : 0;
  return n;
}

std::size_t scratch::locked_bytes() const noexcept {
  return slabs_locked() * page_ + dedicated_bytes_.load(std::memory_order_relaxed);
}

void scratch::reset_in_child(bool pages_inherited) noexcept {
  if (!pages_inherited) base_.store(nullptr, std::memory_order_relaxed);  // not mapped here: reserved again when needed
  for (std::size_t s = 0; s < count_; ++s) slabs_[s].taken.store(0, std::memory_order_relaxed);
  dedicated_bytes_.store(0, std::memory_order_relaxed);  // the parent's dedicated mappings are not locked here
}

}  // namespace securememory::detail::sealed_parts
