// securememory: the "memguard" backend (see the layout in the header).
//
// Theory of operation: sodium_malloc(n + C) gives guard pages on both sides
// and right-aligns the block against the trailing guard; our canary takes
// the block's first C bytes and the secret the remaining n. libsodium locks
// the pages but ignores a refused mlock, so we lock the same range again
// ourselves (through lib/os/, as a raw system call) and fail with
// errc::memlock_limit, freeing the block, when the kernel refuses. libsodium
// also applies MADV_DONTDUMP there, ignoring failure; we apply it again with
// the error checked, plus MADV_WIPEONFORK.
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
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <sys/mman.h>
#include <utility>

namespace securememory::detail {
namespace {

constexpr std::size_t canary_size = 16;
constexpr std::size_t sodium_canary_size = 16;  // libsodium's own, in front of ours

class memguard final : public backend {
 public:
  memguard() { randombytes_buf(canary_.data(), canary_.size()); }

  [[nodiscard]] std::string_view name() const noexcept override { return "memguard"; }

  [[nodiscard]] region allocate(std::size_t size) override {
    const std::size_t page = os::page_size();
    // Overflow check for everything sodium_malloc adds (canaries, 3 pages).
    round_to_pages(size, canary_size + sodium_canary_size + 3 * page);
    const std::size_t block_size = size + canary_size;
    errno = 0;
    void* block = sodium_malloc(block_size);
    if (block == nullptr) {
      const int err = errno != 0 ? errno : ENOMEM;
      throw_os_error(errc::out_of_memory, "cannot allocate guarded memory for a secret", "sodium_malloc", err,
                     "free memory, or raise vm.max_map_count (each secret costs 4 or more mappings)");
    }
    region r;
    r.base = block;
    r.data = static_cast<std::byte*>(block) + canary_size;
    r.size = size;
    const auto [start, length] = unprotected_range(r);
    r.locked = length;
    r.mapped = length + 3 * page;
    if (os::lock(start, length) != 0) {
      const int err = errno;
      sodium_free(block);
      throw_os_error(errc::memlock_limit, fmt::format("cannot lock {} bytes for a secret", length).c_str(), "mlock",
                     err, memlock_hint() + " (libsodium itself ignores this failure; securememory does not)");
    }
    for (const auto& [advice, advice_name] : {std::pair{MADV_DONTDUMP, "MADV_DONTDUMP"},
                                              std::pair{MADV_WIPEONFORK, "MADV_WIPEONFORK"}}) {
      if (os::advise(start, length, advice) != 0) {
        const int err = errno;
        os::unlock(start, length);
        sodium_free(block);
        throw_os_error(errc::protection_failed,
                       fmt::format("cannot apply {} to a secret's memory", advice_name).c_str(), "madvise", err,
                       "this kernel may be too old (Linux 4.14+ is required)");
      }
    }
    std::memcpy(block, canary_.data(), canary_size);
    r.current = access::read_write;
    return r;
  }

  void protect(region& r, access a) override {
    const auto [start, length] = unprotected_range(r);
    protect_pages(start, length, r, a);
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

  [[nodiscard]] bool has_integrity_check() const noexcept override { return true; }

  [[nodiscard]] integrity verify(const region& r) const noexcept override {
    return sodium_memcmp(r.base, canary_.data(), canary_size) == 0 ? integrity::intact
                                                                    : integrity::canary_corrupted;
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
    const auto [start, length] = unprotected_range(r);
    unmap_block(start, length);
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
};

}  // namespace

std::shared_ptr<backend> make_memguard() {
  ensure_initialised();
  static const std::shared_ptr<backend>* instance = new std::shared_ptr<backend>(std::make_shared<memguard>());
  return *instance;
}

}  // namespace securememory::detail
