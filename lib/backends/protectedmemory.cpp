// securememory: the "protectedmemory" backend (see the layout in the header).
//
// Theory of operation: allocate = mmap + mlock + madvise(DONTDUMP) +
// madvise(WIPEONFORK) (on Linux; lib/os/ applies what each platform has); every step that fails undoes the ones before it and
// throws, so a failed allocation holds nothing. release = mprotect(RW) +
// sodium_memzero + munlock + munmap; it goes on past a failing step so that
// as much as possible is given back, then throws the first failure. All
// system calls go through lib/os/.
//
// Page cache (lib/page_cache.hpp): release wipes the whole run and offers
// it to the cache as it is: read-write, all zero, still locked, DONTDUMP and
// WIPEONFORK (those stay on the pages); allocate first takes a cached run of
// the same length, which is writable already: no system call at all instead
// of mmap + mlock + 2 madvise. A cached run holds nothing to protect, so it
// is not made no-access: that mprotect(PROT_NONE) would only cost a TLB
// shootdown on every other CPU running the process (docs/performance.md,
// "Protection changes"). So a secret costs one permission-reducing change
// when it is created (PROT_NONE after the fill), one per access (PROT_NONE
// after the read) and none when it is closed. When mlock is refused, every
// cache is emptied and the lock is tried once more before the allocation
// fails with memlock_limit. A run the cache refuses is unlocked and
// unmapped as before.
#include "backends/protectedmemory.hpp"

#include "internal.hpp"
#include "locked_pages.hpp"
#include "os/os.hpp"
#include "page_cache.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <cerrno>
#include <sys/mman.h>

namespace securememory::detail {
namespace {

constexpr memory_user user{"a secret", "protectedmemory", 1};

void release_run(void* base, std::size_t length) noexcept {
  const unmap_errors e = unmap_locked(base, length);
  if (e.unlock != 0) page_cache::report_release_failure("protectedmemory", "munlock", e.unlock);
  if (e.unmap != 0) page_cache::report_release_failure("protectedmemory", "munmap", e.unmap);
}

// In a forked child the run is zero (MADV_WIPEONFORK) and not locked; on a
// platform that drops such pages from the child (macOS) nothing of it is
// mapped here, and the address may hold one of the child's own mappings.
void forget_run(void* base, std::size_t length) noexcept {
  if (os::fork_hiding() != os::fork_rule::drop) os::unmap(base, length);
}

page_cache& cache() {
  static auto* instance = new page_cache("protectedmemory", release_run, forget_run);  // never destroyed
  return *instance;
}

class protectedmemory final : public backend {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "protectedmemory"; }

  [[nodiscard]] region allocate(std::size_t size) override {
    const std::size_t length = round_to_pages(size);
    if (const page_cache::run cached = cache().take(length); cached.base != nullptr) {
      return make_region(cached.base, size, length);  // wiped and read-write already
    }
    return make_region(map_locked(length, user), size, length);
  }

  [[nodiscard]] BackendDescription describe() const noexcept override {
    BackendDescription d;
    d.mappings_per_secret = 1;
    d.provides.locked = true;
    d.provides.excluded_from_core_dumps = os::can_exclude_from_core_dumps();  // per platform (lib/os/)
    d.provides.no_access_while_idle = true;
    d.provides.hidden_from_fork_children = os::fork_hiding() != os::fork_rule::none;
    d.provides.wiped_on_release = true;
    return d;
  }

  std::optional<ViolationKind> protect(region& r, access a) override {
    protect_pages(r.base, r.mapped, r, a);
    return std::nullopt;
  }

  void release(region& r) override {
    int wipe_err = 0;
    if (r.current == access::read_write || os::protect(r.base, r.mapped, PROT_READ | PROT_WRITE) == 0) {
      sodium_memzero(r.base, r.mapped);
    } else {
      wipe_err = errno;  // cannot write the pages, so cannot wipe them; still give them back
    }
    // Wiped: offer the run to the cache as it is (read-write: it holds
    // nothing to protect). A full cache falls through to the plain release.
    if (wipe_err == 0 && page_cache::accepts(r.mapped) && cache().put({r.base, r.mapped})) {
      r = region{};
      return;
    }
    const unmap_errors released = unmap_locked(r.base, r.mapped);
    r = region{};
    if (wipe_err != 0) {
      throw_os_error(errc::protection_failed, "secret could NOT be wiped before release", "mprotect", wipe_err,
                     "the pages were unlocked and unmapped anyway");
    }
    if (released.unlock != 0) {
      throw_os_error(errc::release_failed, "secret wiped, but unlocking failed", "munlock", released.unlock);
    }
    if (released.unmap != 0) {
      throw_os_error(errc::release_failed, "secret wiped, but unmapping failed", "munmap", released.unmap);
    }
  }

 void release_after_fork(region& r) noexcept override {
    forget_run(r.base, r.mapped);  // the child's copy is zero (or not mapped) and was never locked here
    r = region{};
  }

 private:
  // NOLINTNEXTLINE(bugprone-easily-swappable-parameters): size (asked) vs length (mapped), named at every call
  static region make_region(void* base, std::size_t size, std::size_t length) noexcept {
    region r;
    r.base = base;
    r.data = static_cast<std::byte*>(base);
    r.size = size;
    r.mapped = length;
    r.locked = length;
    r.current = access::read_write;
    return r;
  }
};

}  // namespace

std::shared_ptr<backend> make_protectedmemory() {
  static const std::shared_ptr<backend>* instance = new std::shared_ptr<backend>(std::make_shared<protectedmemory>());
  return *instance;
}

namespace {
// Made while the library loads (detail::made_at_load): a forked child never
// finds it half-made by a thread it does not have.
// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool made_at_load_here = made_at_load([] {
  (void)cache();
  (void)make_protectedmemory();
});
}  // namespace

}  // namespace securememory::detail
