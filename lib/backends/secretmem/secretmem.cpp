// securememory: the "secretmem" backend (see the layout in ../secretmem.hpp).
//
// Theory of operation. The slot allocator (arenas.cpp) keeps the books; this
// file maps the arenas (memfd_secret, ftruncate, a reservation with a
// trailing guard page, the file mapped MAP_SHARED over it, MADV_DONTFORK),
// and does what touches a single slot outside the allocator's lock: the
// guard page after it (an anonymous PROT_NONE page mapped MAP_FIXED over
// the arena's page), its protection, its wipe, and the page cache.
//
//   allocate  1. a slot of the same length from the page cache (wiped,
//                read-write, still in its arena): no system call;
//             2. else a slot placed by the allocator (maybe in a new
//                arena); then map its guard, mprotect(RW) the slot.
//   release   mprotect(RW), sodium_memzero; then the slot goes to the page
//             cache as it is (read-write: it holds nothing to protect, and
//             a PROT_NONE would cost a TLB shootdown on every other CPU;
//             counted in metrics().cached_bytes; its arena stays mapped),
//             or, made no-access again, back to the allocator (free slots
//             are zero and no-access); a slot the cache evicts is made
//             no-access then. A slot that could not be wiped or made
//             no-access again is never used again; it goes (zeroed by the
//             kernel: mm/secretmem.c frees secretmem folios zeroed) with
//             its arena.
//
// Every slot is a mapping (VMA) of its own, so an mprotect of one slot
// neither splits nor merges a VMA (that cost about 2 us per with_bytes
// while slots shared their arena's VMA). A file mapping never merges with
// an anonymous one; the guard is mapped, not a bare hole, so that the
// kernel cannot place another mapping right behind a secret.
//
// fork(): MADV_DONTFORK keeps the arenas out of the child (the kernel
// refuses MADV_WIPEONFORK on shared mappings); releasing a parent's secret
// there only updates the books (region::base points to the arena, not to
// memory: the address alone cannot tell a parent's slot from a child's).
// The probe's and the allocator's locks are held across fork(). The probe
// is probe.cpp's.
#include "backends/secretmem.hpp"

#include "backends/secretmem/arenas.hpp"
#include "backends/secretmem/probe.hpp"
#include "internal.hpp"
#include "locked_pages.hpp"
#include "metrics.hpp"
#include "os/os.hpp"
#include "page_cache.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <cerrno>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>

namespace securememory::detail {
namespace {

using secretmem_parts::arena;
using secretmem_parts::arena_memory;
using secretmem_parts::placement;

// Each secret: its slot and the guard page after it.
constexpr memory_user user{"a secret", "secretmem", 2};
constexpr memory_user guard_user{"the guard page after a secretmem slot", "secretmem", 2};

[[noreturn]] void throw_memfd_secret_error(int err) {
  if (secretmem_parts::refused_by_kernel(err)) {
    throw_os_error(errc::backend_unavailable, "the secretmem backend is not available on this host", "memfd_secret",
                   err, secretmem_parts::kernel_requirement);
  }
  if (err == EMFILE || err == ENFILE) {
    throw_os_error(errc::out_of_memory, "cannot create a secretmem arena", "memfd_secret", err,
                   "close file descriptors or raise RLIMIT_NOFILE (ulimit -n)");
  }
  throw_os_error(errc::out_of_memory, "cannot create a secretmem arena", "memfd_secret", err);
}

// Closes a descriptor when the scope ends. A failed close is ignored: Linux
// releases the descriptor even then, and the mapping holds its own
// reference to the file.
struct fd_closer {
  explicit fd_closer(int descriptor) noexcept : fd(descriptor) {}
  int fd;
  fd_closer(const fd_closer&) = delete;
  fd_closer& operator=(const fd_closer&) = delete;
  ~fd_closer() { (void)os::close_fd(fd); }
};

// Maps a fresh memfd_secret file of `want` pages, halving down to `need`
// pages while RLIMIT_MEMLOCK refuses the size, followed by a guard page (an
// anonymous no-access page, so that the arena's last slot has a guard too).
// Sets arena_base and arena_pages. Returns false when RLIMIT_MEMLOCK refuses even
// `need` pages; throws for every other failure.
// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): need <= want, both pages
bool map_arena(std::size_t need, std::size_t want, std::byte*& arena_base, std::size_t& arena_pages) {
  const std::size_t page = os::page_size();
  const int fd = os::memfd_secret(O_CLOEXEC);
  if (fd < 0) throw_memfd_secret_error(errno);
  const fd_closer closer{fd};
  if (os::truncate_fd(fd, want * page) != 0) {
    const int err = errno;
    throw_os_error(errc::out_of_memory, fmt::format("cannot size a secretmem arena of {} bytes", want * page).c_str(),
                   "ftruncate", err);
  }
  std::size_t n = want;
  void* base = nullptr;
  for (;;) {
    // The arena's address space and its trailing guard, reserved together;
    // the file is then mapped over all but the last page.
    void* reserved = os::map_reserve((n + 1) * page);
    if (reserved == nullptr) throw_map_failed(errno, "mmap", (n + 1) * page, user);
    base = os::map_shared(fd, n * page, reserved);
    if (base != nullptr) break;
    const int err = errno;
    (void)os::unmap(reserved, (n + 1) * page);  // address space only
    if (err == EAGAIN && n > need) {  // the kernel charges RLIMIT_MEMLOCK for the whole mapping
      n = std::max(need, n / 2);
      continue;
    }
    if (err == EAGAIN) return false;
    throw_map_failed(err, "mmap", n * page, user);
  }
  try {
    advise_secret_pages(base, n * page, on_fork::drop, user);  // the kernel already keeps secretmem out of dumps
  } catch (...) {
    (void)os::unmap(base, (n + 1) * page);  // nothing was written to it yet
    throw;
  }
  arena_base = static_cast<std::byte*>(base);
  arena_pages = n;
  return true;
}

// An arena and its trailing guard.
int unmap_arena(std::byte* base, std::size_t pages) noexcept {
  return os::unmap(base, (pages + 1) * os::page_size()) == 0 ? 0 : errno;
}

void release_cached_slot(void* base, std::size_t length) noexcept;

// The cache of wiped slots; evicted slots go back to their arenas. No
// forget hook: in a forked child the backend's own handler drops the
// parent's arenas (none is mapped there).
page_cache& cache() {
  static auto* instance = new page_cache("secretmem", release_cached_slot, nullptr);  // never destroyed
  return *instance;
}

class secretmem final : public backend {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "secretmem"; }

  [[nodiscard]] region allocate(std::size_t size) override {
    const std::size_t page = os::page_size();
    const std::size_t length = round_to_pages(size);
    const std::size_t pages = length / page;
    if (const page_cache::run cached = cache().take(length); cached.base != nullptr) {
      return recycle(static_cast<std::byte*>(cached.base), size, length);
    }
    const placement p = arenas_.place(pages);
    std::byte* data = p.a->base + p.first * page;
    if (p.guard && os::map_guard(data + length, page) == nullptr) {
      const int err = errno;
      arenas_.add_stuck(p.a, 1);  // the page that should have become the guard: still locked
      (void)arenas_.give_back(p.a, p.first, pages, false, false);  // slot and page after it are never used again
      throw_map_failed(err, "mmap", page, guard_user);
    }
    if (os::protect(data, length, PROT_READ | PROT_WRITE) != 0) {
      const int err = errno;
      (void)arenas_.give_back(p.a, p.first, pages, true, false);  // never written: still zero and PROT_NONE
      throw_os_error(errc::protection_failed, "cannot make a secretmem slot writable", "mprotect", err);
    }
    return region{.data = data, .size = size, .base = p.a, .mapped = length, .locked = length};
  }

  [[nodiscard]] BackendDescription describe() const noexcept override {
    BackendDescription d;
    d.mappings_per_secret = 2;
    d.provides.locked = true;
    d.provides.excluded_from_core_dumps = true;
    d.provides.no_access_while_idle = true;
    d.provides.outside_direct_map = true;
    d.provides.guard_pages = true;  // after the slot's last page (the rest of that page is zeros)
    d.provides.hidden_from_fork_children = true;
    d.provides.wiped_on_release = true;
    return d;
  }

  std::optional<ViolationKind> protect(region& r, access a) override {
    protect_pages(r.data, r.mapped, r, a);
    return std::nullopt;
  }

  // fork(): the allocator's lock is held across it (see the handlers below).
  secretmem_parts::arena_set& arenas() noexcept { return arenas_; }

  void release(region& r) override {
    auto* a = static_cast<arena*>(r.base);
    const std::size_t page = os::page_size();
    const auto first = static_cast<std::size_t>(r.data - a->base) / page;
    const std::size_t pages = r.mapped / page;
    const bool mapped_here = a->generation == fork_generation();  // else: MADV_DONTFORK kept these pages out of this process
    int wipe_err = 0;
    int seal_err = 0;
    if (mapped_here) {
      if (r.current == access::read_write || os::protect(r.data, r.mapped, PROT_READ | PROT_WRITE) == 0) {
        sodium_memzero(r.data, r.mapped);
      } else {
        wipe_err = errno;
      }
    }
    if (mapped_here && wipe_err == 0 && page_cache::accepts(r.mapped) && to_cache(a, r.data, r.mapped)) {
      r = region{};
      return;
    }
    if (mapped_here && wipe_err == 0 && os::protect(r.data, r.mapped, PROT_NONE) != 0) seal_err = errno;
    // A slot that could not be wiped, or made no-access again, is never
    // handed out again (free slots are zero and no-access): it stays taken
    // until its arena goes.
    const int unmap_err = arenas_.give_back(a, first, pages, wipe_err == 0 && seal_err == 0, false);
    r = region{};
    if (wipe_err != 0) {
      throw_os_error(errc::protection_failed, "secret could NOT be wiped before release", "mprotect", wipe_err,
                     "its slot is never reused; the kernel zeroes secretmem pages when their arena is unmapped");
    }
    if (seal_err != 0) {
      throw_os_error(errc::release_failed, "secret wiped, but its slot could not be made no-access again", "mprotect",
                     seal_err, "the slot is never reused; it goes with its arena");
    }
    if (unmap_err != 0) {
      throw_os_error(errc::release_failed, "secret wiped, but unmapping its empty arena failed", "munmap", unmap_err);
    }
  }

  void release_after_fork(region& r) noexcept override {
    auto* a = static_cast<arena*>(r.base);
    (void)arenas_.give_back(a, 0, 0, false, false);  // bookkeeping only: a parent's arena is never unmapped here
    r = region{};
  }

  // The page cache evicts a slot: it goes back to its arena as a free
  // segment (the arena is unmapped when nothing else holds it).
  // A cached slot is read-write (wiped); free slots are no-access: one that
  // cannot be made no-access is never used again.
  void evict(std::byte* data, std::size_t length) noexcept {
    arena* a = arenas_.find(data, false);
    if (a == nullptr) return;  // cannot happen: a cached slot keeps its arena
    const std::size_t page = os::page_size();
    const bool sealed = os::protect(data, length, PROT_NONE) == 0;
    if (!sealed) page_cache::report_release_failure("secretmem", "mprotect(PROT_NONE)", errno);
    const int err = arenas_.give_back(a, static_cast<std::size_t>(data - a->base) / page, length / page, sealed, true);
    if (err != 0) page_cache::report_release_failure("secretmem", "munmap", err);
  }

 private:
  // Takes a cached slot (wiped, read-write) for a new secret: no system call.
  region recycle(std::byte* data, std::size_t size, std::size_t length) {
    arena* a = arenas_.find(data, true);
    if (a == nullptr) {  // cannot happen: a cached slot keeps its arena
      throw error(errc::out_of_memory, "a cached secretmem slot has no arena");
    }
    return region{.data = data, .size = size, .base = a, .mapped = length, .locked = length};
  }

  // Offers a wiped, read-write slot to the page cache. The arena counts it
  // as cached before the put, so that a take by another thread right after
  // the put finds the count in place.
  bool to_cache(arena* a, std::byte* data, std::size_t length) {
    arenas_.move_to_cache(a, true);
    if (cache().put({data, length})) return true;
    arenas_.move_to_cache(a, false);  // release() gives it back as a live slot
    return false;
  }

  secretmem_parts::arena_set arenas_{arena_memory{map_arena, unmap_arena, page_cache::release_all_caches}, os::page_size()};
};

// fork() handlers: the probe's and the arenas' locks are taken before the
// fork and released on both sides after it; the child first drops the
// parent's arenas that nothing points to.
secretmem* forking_instance = nullptr;  // set once, before the handlers are registered
std::uint64_t generation_at_fork = 0;     // the forking process's, written under the locks
void before_fork() noexcept {
  secretmem_parts::lock_probe_for_fork();
  forking_instance->arenas().lock_for_fork();
  generation_at_fork = fork_generation();
}
void after_fork_parent() noexcept {
  forking_instance->arenas().unlock_after_fork();
  secretmem_parts::unlock_probe_after_fork();
}
void after_fork_child() noexcept {
  forking_instance->arenas().forget_parent_arenas(generation_at_fork);
  after_fork_parent();
}

// The page cache's release hook (no cache lock held). The cache exists only
// once the backend does, so forking_instance is set.
void release_cached_slot(void* base, std::size_t length) noexcept {
  forking_instance->evict(static_cast<std::byte*>(base), length);
}

// The instance, its fork handlers and its metrics source: made while the
// library loads (detail::made_at_load; nothing here calls the kernel), so a
// forked child never finds them half-made by a thread it does not have.
// make_secretmem() hands it out once the kernel's support is known.
const std::shared_ptr<backend>& instance() {
  static const std::shared_ptr<backend>* made = [] {
    auto one = std::make_shared<secretmem>();
    forking_instance = one.get();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    add_internal_locked_source("secretmem", []() noexcept { return forking_instance->arenas().unused_bytes(); });
    return new std::shared_ptr<backend>(std::move(one));  // never destroyed, like the registry
  }();
  return *made;
}

// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool made_at_load_here = made_at_load([] {
  (void)cache();
  (void)instance();
});

}  // namespace

std::shared_ptr<backend> make_secretmem() {
  secretmem_parts::require_available();
  return instance();
}

}  // namespace securememory::detail
