// securememory: the "secretmem" backend (see the layout in the header).
//
// Theory of operation. One mutex guards the list of arenas and their page
// bitmaps; system calls on a single slot (mprotect, the wipe) run outside it,
// because the state machine never hands the same region to two threads.
//
//   allocate  under the lock: first fit over the arenas of this process
//             (first free run of the secret's pages); if none fits, make an
//             arena (memfd_secret, ftruncate, mmap PROT_NONE MAP_SHARED,
//             close, MADV_DONTFORK). Then, unlocked: mprotect(RW) the slot.
//   release   unlocked: mprotect(RW), sodium_memzero, mprotect(NONE); then
//             under the lock: mark the pages free. An arena whose last secret
//             is gone is unmapped at once (a live secretmem file blocks
//             hibernation, so none is kept around "for later").
//
// Invariant: a free page is zero and PROT_NONE. A slot that could not be
// wiped is never marked free (quarantined); it disappears, zeroed by the
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
// cannot tell a parent's slot from a child's.
//
// Availability is probed once per process (memfd_secret, then close); a
// refusal by the kernel is remembered, a transient failure is not. Both
// locks are held across fork() so a child can use the backend even when
// another thread was inside it at the time of the fork.
#include "backends/secretmem.hpp"

#include "internal.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <limits>
#include <mutex>
#include <pthread.h>
#include <vector>

namespace securememory::detail {
namespace {

constexpr std::size_t min_arena_pages = 4;  // small first: the kernel charges a whole arena to RLIMIT_MEMLOCK at mmap
constexpr std::size_t max_arena_pages = 1024;
constexpr std::size_t no_run = std::numeric_limits<std::size_t>::max();

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

// One memfd_secret file, mapped once; its pages are handed out as slots.
struct arena {
  std::byte* base = nullptr;
  std::size_t pages = 0;
  std::uint64_t generation = 0;  // fork generation it was mapped in
  std::vector<bool> used;        // per page: held by a live or quarantined slot
  std::size_t used_pages = 0;
  std::size_t live = 0;  // live secrets
  std::size_t hint = 0;  // no free page below this index

  // First index of `n` free pages in a row, or no_run.
  [[nodiscard]] std::size_t find_run(std::size_t n) const noexcept {
    if (pages - used_pages < n) return no_run;
    std::size_t run = 0;
    for (std::size_t i = hint; i < pages; ++i) {
      run = used[i] ? 0 : run + 1;
      if (run == n) return i + 1 - n;
    }
    return no_run;
  }

  void take(std::size_t first, std::size_t n) noexcept {
    std::fill_n(used.begin() + static_cast<std::ptrdiff_t>(first), n, true);
    used_pages += n;
    ++live;
    if (first == hint) hint = first + n;
  }

  // A slot that could not be wiped stays marked used (quarantined).
  void give_back(std::size_t first, std::size_t n, bool reusable) noexcept {
    --live;
    if (!reusable) return;
    std::fill_n(used.begin() + static_cast<std::ptrdiff_t>(first), n, false);
    used_pages -= n;
    hint = std::min(hint, first);
  }
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
// pages while RLIMIT_MEMLOCK refuses the size. Sets a.base and a.pages.
// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): need <= want, both pages
void map_arena(arena& a, std::size_t need, std::size_t want) {
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
  while ((base = os::map_shared(fd, n * page)) == nullptr) {
    const int err = errno;
    if (err == EAGAIN && n > need) {  // the kernel charges RLIMIT_MEMLOCK for the whole mapping
      n = std::max(need, n / 2);
      continue;
    }
    const std::string what = fmt::format("cannot map {} bytes of secretmem memory for a secret", n * page);
    if (err == EAGAIN) {
      throw_os_error(errc::memlock_limit, what.c_str(), "mmap", err,
                     "secretmem pages count against RLIMIT_MEMLOCK. " + memlock_hint());
    }
    throw_os_error(errc::out_of_memory, what.c_str(), "mmap", err,
                   "free memory or raise the address-space limit (RLIMIT_AS, vm.max_map_count)");
  }
  if (os::advise(base, n * page, MADV_DONTFORK) != 0) {
    const int err = errno;
    os::unmap(base, n * page);  // nothing was written to it yet
    throw_os_error(errc::protection_failed, "cannot apply MADV_DONTFORK to a secretmem arena", "madvise", err);
  }
  a.base = static_cast<std::byte*>(base);
  a.pages = n;
}

class secretmem final : public backend {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "secretmem"; }

  [[nodiscard]] region allocate(std::size_t size) override {
    const std::size_t page = os::page_size();
    const std::size_t length = round_to_pages(size);
    const std::size_t pages = length / page;
    arena* a = nullptr;
    std::size_t first = 0;
    {
      const std::lock_guard lock(mutex_);
      const std::uint64_t generation = fork_generation();
      for (const auto& candidate : arenas_) {
        if (candidate->generation != generation) continue;  // a parent's arena: not mapped here
        first = candidate->find_run(pages);
        if (first != no_run) {
          a = candidate.get();
          break;
        }
      }
      if (a == nullptr) {
        a = add_arena_locked(pages, generation);
        first = 0;
      }
      a->take(first, pages);
    }
    std::byte* data = a->base + first * page;
    if (os::protect(data, length, PROT_READ | PROT_WRITE) != 0) {
      const int err = errno;
      (void)give_back(a, first, pages, true);  // never written: still zero and PROT_NONE; an unmap failure only leaks address space
      throw_os_error(errc::protection_failed, "cannot make a secretmem slot writable", "mprotect", err);
    }
    return region{.data = data, .size = size, .base = a, .mapped = length, .locked = length};
  }

  void protect(region& r, access a) override { protect_pages(r.data, r.mapped, r, a); }

  // Held across fork() (pthread_atfork), so that a child never inherits it
  // locked by a thread that does not exist there.
  void lock_for_fork() noexcept { mutex_.lock(); }
  void unlock_after_fork() noexcept { mutex_.unlock(); }

  void release(region& r) override {
    auto* a = static_cast<arena*>(r.base);
    const std::size_t page = os::page_size();
    const auto first = static_cast<std::size_t>(r.data - a->base) / page;
    const std::size_t pages = r.mapped / page;
    int wipe_err = 0;
    int seal_err = 0;
    if (a->generation == fork_generation()) {
      if (os::protect(r.data, r.mapped, PROT_READ | PROT_WRITE) == 0) {
        sodium_memzero(r.data, r.mapped);
        if (os::protect(r.data, r.mapped, PROT_NONE) != 0) seal_err = errno;
      } else {
        wipe_err = errno;
      }
    }
    // else: inherited over fork(); MADV_DONTFORK kept these pages out of this process.
    const int unmap_err = give_back(a, first, pages, wipe_err == 0);
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

 private:
  // Makes an arena with at least `need` pages; see the sizes in the header.
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
    map_arena(*fresh, need, want);
    try {
      fresh->used.assign(fresh->pages, false);  // ...except this (bad_alloc)
    } catch (...) {
      os::unmap(fresh->base, fresh->pages * os::page_size());  // nothing written yet
      throw error(errc::out_of_memory, "cannot allocate the bookkeeping of a secretmem arena");
    }
    arenas_.push_back(std::move(fresh));
    return arenas_.back().get();
  }

  // Returns a slot's pages; unmaps the arena when its last secret is gone.
  // Returns munmap's errno, or 0.
  int give_back(arena* a, std::size_t first, std::size_t pages, bool reusable) {
    std::unique_ptr<arena> empty;
    {
      const std::lock_guard lock(mutex_);
      a->give_back(first, pages, reusable);
      if (a->live == 0) {
        const auto it = std::find_if(arenas_.begin(), arenas_.end(), [a](const auto& x) { return x.get() == a; });
        empty = std::move(*it);
        arenas_.erase(it);
      }
    }
    if (!empty || empty->generation != fork_generation()) return 0;  // a parent's arena is not mapped here
    return os::unmap(empty->base, empty->pages * os::page_size()) == 0 ? 0 : errno;
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
// fork and released on both sides after it.
secretmem* forking_instance = nullptr;  // set once, before the handlers are registered
void before_fork() noexcept {
  probe().mutex.lock();
  forking_instance->lock_for_fork();
}
void after_fork() noexcept {
  forking_instance->unlock_after_fork();
  probe().mutex.unlock();
}

}  // namespace

std::shared_ptr<backend> make_secretmem() {
  require_available();
  static const std::shared_ptr<backend>* instance = [] {
    auto made = std::make_shared<secretmem>();
    forking_instance = made.get();
    pthread_atfork(before_fork, after_fork, after_fork);
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
