// securememory: the "memguard" backend (see the layout in the header).
//
// Theory of operation: sodium_malloc(n + C) gives guard pages on both sides
// and right-aligns the block against the trailing guard; our canary takes
// the block's first C bytes and the secret the remaining n. libsodium locks
// the pages but ignores a refused mlock, so we lock the same range again
// ourselves (through lib/os/, as a raw system call) and fail with
// errc::memlock_limit, freeing the block, when the kernel refuses. libsodium
// also applies MADV_DONTDUMP there, ignoring failure; we apply it again with
// the error checked, plus MADV_WIPEONFORK (lib/os/ applies what each
// platform has: docs/backends.md, "Platforms").
//
// Protection changes use mprotect on exactly the range that
// sodium_mprotect_noaccess/readonly/readwrite use (the unprotected region),
// through lib/os/, so that every failure can be injected by the tests.
// release = make writable, wipe canary and data, sodium_free (which checks
// libsodium's canary, wipes again, unlocks and unmaps). When the pages
// cannot be made writable, the secret cannot be wiped and sodium_free would
// fault on its canary check: the whole block is unmapped directly instead
// (the kernel frees the pages, zeroed before any reuse), never unlocked
// while it still holds the secret (it would become swappable; found by the
// fuzz harness, which saw such blocks pile up). quarantine = wipe,
// unlock, leave the pages mapped no-access, and never call sodium_free:
// libsodium's own canary may be broken too, and sodium_free would abort.
#include "backends/memguard.hpp"

#include "internal.hpp"
#include "locked_pages.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sys/mman.h>
#include <utility>

namespace securememory::detail {
namespace {

constexpr std::size_t canary_size = 16;
constexpr std::size_t sodium_canary_size = 16;  // libsodium's own, in front of ours
// Blocks from this size on are probed for the memlock limit before
// sodium_malloc writes them (see allocate()).
constexpr std::size_t probe_threshold = std::size_t{256} * 1024;

// sodium_malloc's block: the first page, a guard, the locked range, a guard.
constexpr memory_user user{"a secret", "memguard", 4};

class memguard final : public backend {
 public:
  memguard() {
    randombytes_buf(canary_.data(), canary_.size());
    // libsodium's canary (one random value per process, in front of every
    // block) is not exported: read it from a block of our own, so that
    // verify() sees an underflow that reaches it before sodium_free would
    // kill the process on it.
    void* probe = sodium_malloc(1);
    if (probe == nullptr) {
      throw error(errc::out_of_memory, "cannot make the memguard backend: sodium_malloc(1) failed; free memory");
    }
    std::memcpy(sodium_canary_.data(), static_cast<const unsigned char*>(probe) - sodium_canary_size,
                sodium_canary_size);
    sodium_free(probe);
  }

  [[nodiscard]] std::string_view name() const noexcept override { return "memguard"; }

  [[nodiscard]] region allocate(std::size_t size) override {
    const std::size_t page = os::page_size();
    // Overflow check for everything sodium_malloc adds (canaries, 3 pages).
    const std::size_t unprotected = round_to_pages(size, canary_size + sodium_canary_size);
    round_to_pages(size, canary_size + sodium_canary_size + 3 * page);
    // sodium_malloc writes every byte of the block before we can lock it
    // (and sodium_free wipes them again): a block that cannot be locked
    // must be refused before it exists, or a request over the limit would
    // touch all its memory first. Small blocks cost little to touch.
    if (unprotected >= probe_threshold) require_lockable(unprotected, user);
    const std::size_t block_size = size + canary_size;
    errno = 0;
    void* block = sodium_malloc(block_size);
    if (block == nullptr) throw_map_failed(errno != 0 ? errno : ENOMEM, "sodium_malloc", block_size, user);
    region r;
    r.base = block;
    r.data = static_cast<std::byte*>(block) + canary_size;
    r.size = size;
    const auto [start, length] = unprotected_range(r);
    r.locked = length;
    r.mapped = length + 3 * page;
    try {
      lock_pages(start, length, user);  // libsodium ignores a refused mlock; we do not
    } catch (...) {
      sodium_free(block);
      throw;
    }
    try {
      advise_secret_pages(start, length, on_fork::wipe, user);
    } catch (...) {
      os::unlock(start, length);
      sodium_free(block);
      throw;
    }
    std::memcpy(block, canary_.data(), canary_size);
    r.current = access::read_write;
    return r;
  }

  [[nodiscard]] BackendDescription describe() const noexcept override {
    BackendDescription d;
    d.mappings_per_secret = 4;
    d.provides.locked = true;
    d.provides.excluded_from_core_dumps = os::can_exclude_from_core_dumps();  // per platform (lib/os/)
    d.provides.no_access_while_idle = true;
    d.provides.guard_pages = true;
    d.provides.canary = true;
    d.provides.hidden_from_fork_children = os::fork_hiding() != os::fork_rule::none;
    d.provides.wiped_on_release = true;
    d.checks_integrity = true;
    return d;
  }

  std::optional<ViolationKind> protect(region& r, access a) override {
    const auto [start, length] = unprotected_range(r);
    protect_pages(start, length, r, a);
    return std::nullopt;
  }

  void release(region& r) override {
    const auto [start, length] = unprotected_range(r);
    if (r.current != access::read_write) {
      if (os::protect(start, length, PROT_READ | PROT_WRITE) != 0) {
        const int err = errno;
        // Cannot wipe, and sodium_free would fault on its canary check.
        const bool unmapped = unmap_block(start, length) == 0;
        r = region{};
        throw_os_error(errc::protection_failed, "secret could NOT be wiped before release", "mprotect", err,
                       unmapped ? "its pages were unmapped unwiped (the kernel frees them)"
                                : "unmapping failed too: its pages stay locked and no-access");
      }
    }
    sodium_memzero(r.base, r.size + canary_size);
    sodium_free(r.base);  // wipes the region again, munlock, munmap
    r = region{};
  }

  [[nodiscard]] std::optional<ViolationKind> verify(const region& r) const noexcept override {
    const auto* ours = static_cast<const unsigned char*>(r.base);
    const bool intact = sodium_memcmp(ours, canary_.data(), canary_size) == 0 &&
                        sodium_memcmp(ours - sodium_canary_size, sodium_canary_.data(), sodium_canary_size) == 0;
    if (intact) return std::nullopt;
    return ViolationKind::canary_overwritten;
  }

  void quarantine(region& r) noexcept override {
    const auto [start, length] = unprotected_range(r);
    if (os::protect(start, length, PROT_READ | PROT_WRITE) == 0) {
      sodium_memzero(r.base, r.size + canary_size);
    } else {
      log_error("quarantine: could not make a corrupted secret writable to wipe it");
    }
    os::protect(start, length, PROT_NONE);  // best effort: a failure leaves it as it was
    if (os::unlock(start, length) == 0) r.locked = 0;
    r.current = access::none;
  }

  void release_after_fork(region& r) noexcept override {
    // In the child the data pages are zero (MADV_WIPEONFORK), so libsodium's
    // canary is gone and sodium_free would abort: unmap the whole block.
    // Where the platform drops them from the child instead (macOS), only
    // the block's other pages are here: the data's range may hold one of
    // the child's own mappings by now.
    const auto [start, length] = unprotected_range(r);
    if (os::fork_hiding() == os::fork_rule::drop) {
      const std::size_t page = os::page_size();
      (void)os::unmap(static_cast<std::byte*>(start) - 2 * page, 2 * page);  // first page, leading guard
      (void)os::unmap(static_cast<std::byte*>(start) + length, page);        // trailing guard
    } else {
      unmap_block(start, length);
    }
    r = region{};
  }

 private:
  // Unmaps the whole sodium_malloc block around an unprotected range: its
  // first page (the size) and leading guard, the range, the trailing guard.
  static int unmap_block(void* start, std::size_t length) noexcept {
    const std::size_t page = os::page_size();
    return os::unmap(static_cast<std::byte*>(start) - 2 * page, length + 3 * page);
  }

  // The pages sodium_malloc locked and sodium_mprotect_* toggles: from the
  // page holding libsodium's canary to the end of the data.
  static std::pair<void*, std::size_t> unprotected_range(const region& r) noexcept {
    const std::size_t page = os::page_size();
    const auto canary = reinterpret_cast<std::uintptr_t>(r.base) - sodium_canary_size;
    const std::uintptr_t start = canary & ~(static_cast<std::uintptr_t>(page) - 1);
    const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(r.data) + r.size;
    return {reinterpret_cast<void*>(start), end - start};  // NOLINT(performance-no-int-to-ptr): page arithmetic
  }

  std::array<unsigned char, canary_size> canary_{};
  std::array<unsigned char, sodium_canary_size> sodium_canary_{};
};

}  // namespace

// Made on first use (its constructor maps a probe block through libsodium,
// which loading the library must not do), without a function-local static:
// a thread that forks while another makes the instance leaves its child an
// empty slot to fill, never an initialisation to wait for. Two threads may
// both make one; the first published wins and the other is dropped.
std::shared_ptr<backend> make_memguard() {
  ensure_initialised();
  static constinit std::atomic<const std::shared_ptr<backend>*> instance{nullptr};
  if (const auto* p = instance.load(std::memory_order_acquire)) return *p;
  auto made = std::make_unique<const std::shared_ptr<backend>>(std::make_shared<memguard>());
  const std::shared_ptr<backend>* expected = nullptr;
  if (instance.compare_exchange_strong(expected, made.get(), std::memory_order_acq_rel)) {
    return *made.release();  // never destroyed, like the registry
  }
  return *expected;
}

}  // namespace securememory::detail
