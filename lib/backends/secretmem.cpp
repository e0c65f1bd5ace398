// securememory: the "secretmem" backend (see the layout in the header).
//
// Theory of operation. One mutex guards the list of arenas and their free
// segments; system calls on a single slot (mprotect, the wipe, the mmap of
// its guard page) run outside it, because the state machine never hands the
// same region to two threads.
//
// Every slot is a mapping (VMA) of its own: the page after it is a guard (an
// anonymous PROT_NONE page mapped MAP_FIXED over the arena's page) unless
// the slot ends its arena, and the page before it is a guard or the arena's
// start. A file mapping never merges with an anonymous one, so an mprotect
// of one slot neither splits a VMA nor merges one back, which cost about
// 2 us per with_bytes while slots shared their arena's VMA (measured;
// docs/design.md). The guard is mapped, not a bare hole, so that the kernel
// cannot place another mapping right behind a secret, and so that the whole
// arena range is still ours to unmap. A guard is for good (the descriptor is
// closed, so the page cannot be mapped again); a released slot becomes a
// free segment bounded by guards, and segments never coalesce.
//
//   allocate  1. a slot of the same length from the page cache (wiped,
//                PROT_NONE, still in its arena): one mprotect(RW);
//             2. else, under the lock: the first free segment of exactly the
//                secret's pages, else the first one longer than that (the
//                page after the slot becomes its guard), else a new arena
//                (memfd_secret, ftruncate, mmap PROT_NONE MAP_SHARED, close,
//                MADV_DONTFORK). Then, unlocked: map the guard,
//                mprotect(RW) the slot. When RLIMIT_MEMLOCK refuses even an
//                arena of the secret's own pages, every page cache is emptied
//                (unlocked) and the placement is tried once more.
//   release   unlocked: mprotect(RW), sodium_memzero, mprotect(NONE); then
//             the slot goes to the page cache (lib/page_cache.hpp; counted in
//             metrics().cached_bytes; its arena stays mapped), or, when the
//             cache refuses it, back to its arena as a free segment. An arena
//             with neither a live nor a cached slot is unmapped at once.
//
// Invariant: a free or cached slot is zero and PROT_NONE. A slot that could
// not be wiped is never made free (quarantined); it disappears, zeroed by the
// kernel (mm/secretmem.c frees secretmem folios zeroed), when its arena is
// unmapped.
//
// fork(): MADV_DONTFORK keeps the arenas out of the child (the kernel refuses
// MADV_WIPEONFORK on shared mappings). Each arena remembers the fork
// generation it was made in; in a child, arenas of the parent are never
// allocated from, and releasing a parent's secret only updates the
// bookkeeping: the child has no such pages, and the address range may by now
// hold one of the child's own mappings, which must not be touched. This is
// why region::base points to the arena, not to memory: the address alone
// cannot tell a parent's slot from a child's. In the child the page cache
// forgets its runs, and our child handler drops the parent's arenas that no
// inherited secret points to.
//
// Availability is probed once per process (memfd_secret, then close); a
// refusal by the kernel is remembered, a transient failure is not. Both
// locks are held across fork() so a child can use the backend even when
// another thread was inside it at the time of the fork.
#include "backends/secretmem.hpp"

#include "internal.hpp"
#include "locked_pages.hpp"
#include "os/os.hpp"
#include "page_cache.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <pthread.h>
#include <vector>

namespace securememory::detail {
namespace {

constexpr std::size_t min_arena_pages = 4;  // small first: the kernel charges a whole arena to RLIMIT_MEMLOCK at mmap
constexpr std::size_t max_arena_pages = 1024;

// Each secret: its slot and the guard page after it.
constexpr memory_user user{"a secret", "secretmem", 2};
constexpr memory_user guard_user{"the guard page after a secretmem slot", "secretmem", 2};

constexpr const char* kernel_requirement =
    "memfd_secret needs Linux 5.14+ built with CONFIG_SECRETMEM, booted with secretmem.enable=1 on kernels "
    "before 6.5 (secretmem.enable=0 turns it off on any kernel); seccomp filters (container runtimes) may also "
    "refuse it. Use the protectedmemory backend on this host";

// errno values by which the kernel (or a seccomp filter) refuses
// memfd_secret for good, as opposed to a transient shortage.
bool refused_by_kernel(int err) noexcept { return err == ENOSYS || err == EINVAL || err == EPERM || err == EOPNOTSUPP; }

[[noreturn]] void throw_memfd_secret_error(int err) {
  if (refused_by_kernel(err)) {
    throw_os_error(errc::backend_unavailable, "the secretmem backend is not available on this host", "memfd_secret",
                   err, kernel_requirement);
  }
  if (err == EMFILE || err == ENFILE) {
    throw_os_error(errc::out_of_memory, "cannot create a secretmem arena", "memfd_secret", err,
                   "close file descriptors or raise RLIMIT_NOFILE (ulimit -n)");
  }
  throw_os_error(errc::out_of_memory, "cannot create a secretmem arena", "memfd_secret", err);
}

// One memfd_secret file, mapped once; its pages are handed out as slots,
// each followed by a guard page unless it ends the arena.
struct arena {
  using segments = std::map<std::size_t, std::size_t>;  // first page -> pages

  std::byte* base = nullptr;
  std::size_t pages = 0;
  std::uint64_t generation = 0;  // fork generation it was mapped in
  // Free segments, each zero and PROT_NONE, preceded by a guard or the
  // arena's start and followed by a guard or the arena's end.
  segments free;
  std::size_t live = 0;    // slots of live secrets (their region::base points here)
  std::size_t cached = 0;  // slots held by the page cache
  std::size_t stuck = 0;   // pages never used again (not wiped, or no bookkeeping): locked until the arena goes

  [[nodiscard]] bool empty() const noexcept { return live == 0 && cached == 0; }

  [[nodiscard]] bool contains(const std::byte* p) const noexcept {
    return p >= base && p < base + pages * os::page_size();
  }

  // The first free segment that can hold n pages: of exactly n pages
  // (`exact`), or of more (the slot then needs a guard after it).
  [[nodiscard]] segments::iterator find(std::size_t n, bool exact) noexcept {
    return std::find_if(free.begin(), free.end(), [&](const auto& s) { return exact ? s.second == n : s.second > n; });
  }

  // Gives the first n pages of `segment` to a live secret. Returns true when
  // the page after them must become a guard (the rest, if any, stays free).
  // Never allocates: the segment's node is reused for the rest.
  bool take(segments::iterator segment, std::size_t n) noexcept {
    ++live;
    auto node = free.extract(segment);
    if (node.mapped() == n) return false;
    if (node.mapped() > n + 1) {
      node.key() += n + 1;
      node.mapped() -= n + 1;
      free.insert(std::move(node));
    }
    return true;
  }
};

// Where a new slot goes.
struct placement {
  arena* a = nullptr;
  std::size_t first = 0;  // page index in the arena
  bool guard = false;     // the page after the slot must become a guard
};

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
// Sets a.base and a.pages. Returns false when RLIMIT_MEMLOCK refuses even
// `need` pages; throws for every other failure.
// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): need <= want, both pages
bool map_arena(arena& a, std::size_t need, std::size_t want) {
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
  a.base = static_cast<std::byte*>(base);
  a.pages = n;
  return true;
}

void release_cached_slot(void* base, std::size_t length) noexcept;

// The cache of wiped slots; evicted slots go back to their arenas. No
// forget hook: in a forked child the backend's own handler drops the
// parent's arenas (none is mapped there).
page_cache& cache() {
  static auto* instance = new page_cache(release_cached_slot, nullptr);  // never destroyed
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
    const placement p = place(pages);
    std::byte* data = p.a->base + p.first * page;
    if (p.guard && os::map_guard(data + length, page) == nullptr) {
      const int err = errno;
      {
        const std::lock_guard lock(mutex_);
        ++p.a->stuck;  // the page that should have become the guard: still locked
      }
      (void)give_back(p.a, p.first, pages, false, false);  // slot and page after it are never used again
      throw_map_failed(err, "mmap", page, guard_user);
    }
    if (os::protect(data, length, PROT_READ | PROT_WRITE) != 0) {
      const int err = errno;
      (void)give_back(p.a, p.first, pages, true, false);  // never written: still zero and PROT_NONE
      throw_os_error(errc::protection_failed, "cannot make a secretmem slot writable", "mprotect", err);
    }
    return region{.data = data, .size = size, .base = p.a, .mapped = length, .locked = length};
  }

  void protect(region& r, access a) override { protect_pages(r.data, r.mapped, r, a); }

  // Held across fork() (pthread_atfork), so that a child never inherits it
  // locked by a thread that does not exist there.
  void lock_for_fork() noexcept { mutex_.lock(); }
  void unlock_after_fork() noexcept { mutex_.unlock(); }

  // In the child, with the lock still held: every arena is the parent's and
  // none is mapped here. Those no inherited secret points to are dropped;
  // the page cache has forgotten the cached slots.
  void forget_parent_arenas(std::uint64_t parent_generation) noexcept {
    // The file mappings of the arenas the parent had mapped are not here
    // (MADV_DONTFORK) but their guard pages (anonymous) are: unmap those
    // ranges now, while nothing of the child's own can be mapped there yet.
    // (Older arenas were unmapped in an earlier child: their ranges may now
    // hold the parent's own mappings.)
    const std::size_t page = os::page_size();
    for (const auto& a : arenas_) {
      if (a->generation == parent_generation) (void)os::unmap(a->base, (a->pages + 1) * page);
    }
    std::erase_if(arenas_, [](const auto& a) { return a->live == 0; });
    for (const auto& a : arenas_) a->cached = 0;
  }

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
        if (os::protect(r.data, r.mapped, PROT_NONE) != 0) seal_err = errno;
      } else {
        wipe_err = errno;
      }
    }
    if (mapped_here && wipe_err == 0 && seal_err == 0 && page_cache::accepts(r.mapped) && to_cache(a, r.data, r.mapped)) {
      r = region{};
      return;
    }
    const int unmap_err = give_back(a, first, pages, wipe_err == 0, false);
    r = region{};
    if (wipe_err != 0) {
      throw_os_error(errc::protection_failed, "secret could NOT be wiped before release", "mprotect", wipe_err,
                     "its slot is never reused; the kernel zeroes secretmem pages when their arena is unmapped");
    }
    if (seal_err != 0) {
      throw_os_error(errc::release_failed, "secret wiped, but its slot could not be made no-access again", "mprotect",
                     seal_err);
    }
    if (unmap_err != 0) {
      throw_os_error(errc::release_failed, "secret wiped, but unmapping its empty arena failed", "munmap", unmap_err);
    }
  }

  void release_after_fork(region& r) noexcept override {
    auto* a = static_cast<arena*>(r.base);
    (void)give_back(a, 0, 0, false, false);  // bookkeeping only: a parent's arena is never unmapped here
    r = region{};
  }

  // Locked arena pages no secret uses, in this process: free segments and
  // pages that are never used again (metrics().internal_locked_bytes).
  std::size_t unused_locked_bytes() noexcept {
    const std::uint64_t generation = fork_generation();
    std::size_t pages = 0;
    const std::lock_guard lock(mutex_);
    for (const auto& a : arenas_) {
      if (a->generation != generation) continue;  // a parent's: not mapped here
      pages += a->stuck;
      for (const auto& segment : a->free) pages += segment.second;
    }
    return pages * os::page_size();
  }

  // The page cache evicts a slot: it goes back to its arena as a free
  // segment (the arena is unmapped when nothing else holds it).
  void evict(std::byte* data, std::size_t length) noexcept {
    arena* a = nullptr;
    {
      const std::lock_guard lock(mutex_);
      a = find_locked(data);
    }
    if (a == nullptr) return;  // cannot happen: a cached slot keeps its arena
    const std::size_t page = os::page_size();
    (void)give_back(a, static_cast<std::size_t>(data - a->base) / page, length / page, true, true);
  }

 private:
  // Takes a cached slot for a new secret: one mprotect.
  region recycle(std::byte* data, std::size_t size, std::size_t length) {
    arena* a = nullptr;
    {
      const std::lock_guard lock(mutex_);
      a = find_locked(data);
      if (a != nullptr) {
        --a->cached;
        ++a->live;
      }
    }
    if (a == nullptr) {  // cannot happen: a cached slot keeps its arena
      throw error(errc::out_of_memory, "a cached secretmem slot has no arena");
    }
    if (os::protect(data, length, PROT_READ | PROT_WRITE) != 0) {
      const int err = errno;
      const std::size_t page = os::page_size();
      (void)give_back(a, static_cast<std::size_t>(data - a->base) / page, length / page, true, false);  // still wiped
      throw_os_error(errc::protection_failed, "cannot make a recycled secretmem slot writable", "mprotect", err);
    }
    return region{.data = data, .size = size, .base = a, .mapped = length, .locked = length};
  }

  // Offers a wiped, no-access slot to the page cache. The arena counts it
  // as cached before the put, so that a take by another thread right after
  // the put finds the count in place.
  bool to_cache(arena* a, std::byte* data, std::size_t length) {
    {
      const std::lock_guard lock(mutex_);
      --a->live;
      ++a->cached;
    }
    if (cache().put({data, length})) return true;
    const std::lock_guard lock(mutex_);
    --a->cached;
    ++a->live;  // release() gives it back as a live slot
    return false;
  }

  // The current-generation arena holding `p`, or nullptr.
  arena* find_locked(const std::byte* p) const noexcept {
    const std::uint64_t generation = fork_generation();
    for (const auto& a : arenas_) {
      if (a->generation == generation && a->contains(p)) return a.get();
    }
    return nullptr;
  }

  // Finds or makes room for a slot of `pages` pages and takes it.
  placement place(std::size_t pages) {
    for (bool retried = false;; retried = true) {
      {
        const std::lock_guard lock(mutex_);
        const std::uint64_t generation = fork_generation();
        for (const bool exact : {true, false}) {
          for (const auto& a : arenas_) {
            if (a->generation != generation) continue;  // a parent's arena: not mapped here
            if (const auto segment = a->find(pages, exact); segment != a->free.end()) {
              const std::size_t first = segment->first;
              return {a.get(), first, a->take(segment, pages)};
            }
          }
        }
        if (arena* fresh = add_arena_locked(pages, generation); fresh != nullptr) {
          return {fresh, 0, fresh->take(fresh->free.begin(), pages)};
        }
      }
      // RLIMIT_MEMLOCK refused even the secret's own pages: empty the page
      // caches (their hooks take our lock, so not under it) and try once more.
      if (retried || page_cache::release_all_caches() == 0) {
        throw_os_error(errc::memlock_limit,
                       fmt::format("cannot map {} bytes of secretmem memory for a secret", pages * os::page_size())
                           .c_str(),
                       "mmap", EAGAIN, "secretmem pages count against RLIMIT_MEMLOCK; " + memlock_hint());
      }
    }
  }

  // Makes an arena with at least `need` pages (see the sizes in the
  // header), or returns nullptr when RLIMIT_MEMLOCK refuses `need` pages.
  // NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
  arena* add_arena_locked(std::size_t need, std::uint64_t generation) {
    std::size_t capacity = 0;
    for (const auto& x : arenas_) {
      if (x->generation == generation) capacity += x->pages;
    }
    const std::size_t want = std::max(need, std::clamp(capacity, min_arena_pages, max_arena_pages));
    auto fresh = std::make_unique<arena>();
    fresh->generation = generation;
    arenas_.reserve(arenas_.size() + 1);  // so that nothing below can throw once the arena is mapped...
    if (!map_arena(*fresh, need, want)) return nullptr;
    try {
      fresh->free.emplace(0, fresh->pages);  // ...except this (bad_alloc)
    } catch (...) {
      os::unmap(fresh->base, fresh->pages * os::page_size());  // nothing written yet
      throw error(errc::out_of_memory, "cannot allocate the bookkeeping of a secretmem arena");
    }
    arenas_.push_back(std::move(fresh));
    return arenas_.back().get();
  }

  // Returns a live (or, `from_cache`, a cached) slot of `pages` pages at
  // `first` to its arena: as a free segment when `reusable`, else it stays
  // taken until the arena goes. Unmaps the arena when nothing holds it any
  // more (only in the process that mapped it). Returns munmap's errno, or 0.
  // NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
  int give_back(arena* a, std::size_t first, std::size_t pages, bool reusable, bool from_cache) noexcept {
    std::unique_ptr<arena> empty;
    {
      const std::lock_guard lock(mutex_);
      --(from_cache ? a->cached : a->live);
      if (!reusable) a->stuck += pages;
      if (reusable) {
        try {
          a->free.emplace(first, pages);
        } catch (...) {  // no memory for the bookkeeping: the slot stays unused (zero, no-access) until its arena goes
          a->stuck += pages;
        }
      }
      if (a->empty()) {
        const auto it = std::find_if(arenas_.begin(), arenas_.end(), [a](const auto& x) { return x.get() == a; });
        empty = std::move(*it);
        arenas_.erase(it);
      }
    }
    if (!empty || empty->generation != fork_generation()) return 0;  // a parent's arena is not mapped here
    if (os::unmap(empty->base, (empty->pages + 1) * os::page_size()) == 0) return 0;  // with its trailing guard
    const int err = errno;
    // Still mapped and locked: keep the arena, so its wiped slots are used
    // again and the unmap is retried when it empties next time (forgetting
    // it would leave locked memory nobody can reach). The erase above left
    // the vector's capacity in place, so this push_back does not allocate.
    const std::lock_guard lock(mutex_);
    arenas_.push_back(std::move(empty));
    return err;
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<arena>> arenas_;
};

// The once-per-process availability probe.
struct probe_state {
  enum class status : unsigned char { unknown, available, refused };
  std::mutex mutex;
  status state = status::unknown;
  int err = 0;
};

probe_state& probe() {
  static auto* instance = new probe_state();  // never destroyed, like the registry
  return *instance;
}

void require_available() {
  auto& p = probe();
  const std::lock_guard lock(p.mutex);
  if (p.state == probe_state::status::available) return;
  int err = p.err;
  if (p.state == probe_state::status::unknown) {
    const int fd = os::memfd_secret(O_CLOEXEC);
    if (fd >= 0) {
      (void)os::close_fd(fd);  // Linux releases the descriptor even when close fails
      p.state = probe_state::status::available;
      return;
    }
    err = errno;
    if (refused_by_kernel(err)) {
      p.state = probe_state::status::refused;
      p.err = err;
    }
  }
  throw_os_error(errc::backend_unavailable, "the secretmem backend is not available on this host", "memfd_secret", err,
                 refused_by_kernel(err) ? std::string(kernel_requirement)
                                        : std::string("this looks transient; the next attempt probes again"));
}

// fork() handlers: the probe's and the arenas' locks are taken before the
// fork and released on both sides after it; the child first drops the
// parent's arenas that nothing points to.
secretmem* forking_instance = nullptr;  // set once, before the handlers are registered
std::uint64_t generation_at_fork = 0;     // the forking process's, written under the locks
void before_fork() noexcept {
  probe().mutex.lock();
  forking_instance->lock_for_fork();
  generation_at_fork = fork_generation();
}
void after_fork_parent() noexcept {
  forking_instance->unlock_after_fork();
  probe().mutex.unlock();
}
void after_fork_child() noexcept {
  forking_instance->forget_parent_arenas(generation_at_fork);
  after_fork_parent();
}

// The page cache's release hook (no cache lock held). The cache exists only
// once the backend does, so forking_instance is set.
void release_cached_slot(void* base, std::size_t length) noexcept {
  forking_instance->evict(static_cast<std::byte*>(base), length);
}

}  // namespace

std::shared_ptr<backend> make_secretmem() {
  require_available();
  static const std::shared_ptr<backend>* instance = [] {
    auto made = std::make_shared<secretmem>();
    forking_instance = made.get();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    add_internal_locked_source([]() noexcept { return forking_instance->unused_locked_bytes(); });
    return new std::shared_ptr<backend>(std::move(made));  // never destroyed, like the registry
  }();
  return *instance;
}

void forget_secretmem_probe() noexcept {
  auto& p = probe();
  const std::lock_guard lock(p.mutex);
  p.state = probe_state::status::unknown;
  p.err = 0;
}

}  // namespace securememory::detail
