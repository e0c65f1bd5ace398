// securememory: the one path that maps and locks memory (see
// locked_pages.hpp).
//
// Theory of operation. mlock fails with ENOMEM for two unrelated reasons:
// the request would exceed RLIMIT_MEMLOCK (unprivileged processes), or the
// kernel could not split a mapping because the process is at
// vm.max_map_count (any process, root included). mmap's ENOMEM is likewise
// either a shortage of memory or address space, or the map count. The
// failure path (never the fast path) tells them apart by reading the
// process's mapping count and the sysctl, and by checking whether
// RLIMIT_MEMLOCK can bind at all (CAP_IPC_LOCK, or an unlimited limit).
// Before any lock is reported as refused, the page caches are emptied
// (they hold locked pages of closed secrets) and the lock is tried again:
// this retry lives here and nowhere else.
//
// Platforms (lib/os/): the map count is read on Linux only (elsewhere a
// failure is never blamed on it); the probe of require_lockable() needs
// mlock2 (Linux; elsewhere the caller's own lock is the check); dump
// exclusion and the fork rule are applied where the platform has them and
// skipped where it does not, which the backends' describe() reports.
#include "locked_pages.hpp"

#include "internal.hpp"
#include "os/os.hpp"
#include "page_cache.hpp"

#include <securememory/error.hpp>

#include <cerrno>
#include <limits>
#include <sys/resource.h>

namespace securememory::detail {
namespace {

// Mappings one more lock or map may need: mlock can split a mapping in
// three, a memguard allocation makes four.
constexpr long mappings_needed = 4;

struct map_count {
  long count = -1;
  long max = -1;
  [[nodiscard]] bool exhausted() const noexcept { return count >= 0 && max >= 0 && max - count < mappings_needed; }
};

map_count read_map_count() noexcept { return {os::mapping_count(), os::max_map_count()}; }

std::string map_count_text(const map_count& m, const memory_user& who) {
  return fmt::format(
      "the process has {} mappings and vm.max_map_count is {}; each {} secret costs {} mapping{}: raise "
      "vm.max_map_count (sysctl vm.max_map_count=...) or hold fewer secrets",
      m.count, m.max, who.backend, who.mappings_per_secret, who.mappings_per_secret == 1 ? "" : "s");
}

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
[[noreturn]] void throw_lock_failed(int err, std::size_t length, const memory_user& who) {
  const std::string what = fmt::format("cannot lock {} bytes for {}", length, who.what);
  if (err == ENOMEM) {
    if (const map_count m = read_map_count(); m.exhausted()) {
      throw_os_error(errc::out_of_memory, (what + " (vm.max_map_count reached)").c_str(), "mlock", err,
                     map_count_text(m, who));
    }
    if (os::memlock_unbounded()) {
      throw_os_error(errc::out_of_memory, what.c_str(), "mlock", err,
                     fmt::format("RLIMIT_MEMLOCK does not bind this process ({} or unlimited): the system is out of "
                                 "memory it can lock",
                                 os::lock_privilege_name()));
    }
  }
  throw_os_error(errc::memlock_limit, what.c_str(), "mlock", err, memlock_hint());
}

}  // namespace

std::string memlock_hint() {
  rlimit lim{};
  if (!os::memlock_limit(lim)) {
    return fmt::format("raise RLIMIT_MEMLOCK (ulimit -l) or grant {}", os::lock_privilege_name());
  }
  auto text = [](rlim_t v) { return v == RLIM_INFINITY ? std::string("unlimited") : fmt::format("{} bytes", v); };
  return fmt::format(
      "RLIMIT_MEMLOCK is {} (soft) / {} (hard) and the library's page caches were already emptied; raise it "
      "(ulimit -l, LimitMEMLOCK= in systemd, --ulimit memlock in containers), grant {}, or hold fewer "
      "secrets (the sealed backend locks a fixed amount whatever their number)",
      text(lim.rlim_cur), text(lim.rlim_max), os::lock_privilege_name());
}

void throw_map_failed(int err, const char* call, std::size_t length, const memory_user& who) {
  const std::string what = fmt::format("cannot map {} bytes for {}", length, who.what);
  if (err == ENOMEM) {
    if (const map_count m = read_map_count(); m.exhausted()) {
      throw_os_error(errc::out_of_memory, (what + " (vm.max_map_count reached)").c_str(), call, err,
                     map_count_text(m, who));
    }
  }
  throw_os_error(errc::out_of_memory, what.c_str(), call, err,
                 "free memory, or raise the address-space limit (RLIMIT_AS) or vm.overcommit settings");
}

void lock_pages(void* addr, std::size_t length, const memory_user& who) {
  if (os::lock(addr, length) == 0) return;
  int err = errno;
  if (page_cache::release_all_caches() > 0) {
    if (os::lock(addr, length) == 0) return;
    err = errno;
  }
  throw_lock_failed(err, length, who);
}

void require_lockable(std::size_t length, const memory_user& who) {
  if (!os::can_lock_on_fault()) return;  // no probe without mlock2: the caller's lock is the check
  void* probe = os::map_reserve(length);
  if (probe == nullptr) throw_map_failed(errno, "mmap", length, who);
  int rc = os::lock_on_fault(probe, length);
  int err = errno;
  if (rc != 0 && page_cache::release_all_caches() > 0) {
    rc = os::lock_on_fault(probe, length);
    err = errno;
  }
  (void)os::unmap(probe, length);  // untouched address space: nothing to wipe; a failure only leaks the range
  if (rc == 0 || err == ENOSYS || err == EINVAL) return;  // locked, or a kernel without mlock2: cannot tell
  throw_lock_failed(err, length, who);
}

void advise_secret_pages(void* addr, std::size_t length, on_fork fork, const memory_user& who) {
  // What this platform does not provide is not done, and the backends'
  // describe() says so (docs/backends.md, "Platforms").
  if (os::can_exclude_from_core_dumps() && os::exclude_from_core_dumps(addr, length) != 0) {
    const int err = errno;
    throw_os_error(errc::protection_failed, fmt::format("cannot exclude {} from core dumps", who.what).c_str(),
                   os::core_dump_exclusion_call(), err, os::core_dump_exclusion_needs());
  }
  if (fork == on_fork::drop) {
    if (os::drop_on_fork(addr, length) != 0) {
      const int err = errno;
      throw_os_error(errc::protection_failed,
                     fmt::format("cannot keep {} out of forked children", who.what).c_str(),
                     "madvise(MADV_DONTFORK)", err, "this kernel may be too old (Linux 4.14+ is required)");
    }
    return;
  }
  if (os::fork_hiding() != os::fork_rule::none && os::hide_from_fork(addr, length) != 0) {
    const int err = errno;
    throw_os_error(errc::protection_failed,
                   fmt::format("cannot keep {} out of forked children", who.what).c_str(), os::fork_hiding_call(),
                   err, os::fork_hiding_needs());
  }
}

void* map_locked(std::size_t length, const memory_user& who) {
  void* p = os::map_anonymous(length);
  if (p == nullptr) throw_map_failed(errno, "mmap", length, who);
  try {
    lock_pages(p, length, who);
  } catch (...) {
    (void)os::unmap(p, length);  // nothing was locked or written
    throw;
  }
  try {
    advise_secret_pages(p, length, on_fork::wipe, who);
  } catch (...) {
    (void)unmap_locked(p, length);  // nothing was written to it yet
    throw;
  }
  return p;
}

unmap_errors unmap_locked(void* addr, std::size_t length) noexcept {
  unmap_errors e;
  if (os::unlock(addr, length) != 0) e.unlock = errno;
  if (os::unmap(addr, length) != 0) e.unmap = errno;
  return e;
}

std::size_t round_to_pages(std::size_t size, std::size_t extra) {
  const std::size_t page = os::page_size();
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
  if (size == 0) throw error(errc::invalid_size, "secret size must be at least 1 byte");
  if (size > max - extra || size + extra > max - (page - 1)) {
    throw error(errc::invalid_size,
                fmt::format("secret size {} is too large: rounding it to whole pages overflows", size));
  }
  return (size + extra + page - 1) / page * page;
}

void protect_pages(void* addr, std::size_t length, region& r, access a) {
  if (os::protect(addr, length, page_protection(a)) != 0) {
    const int err = errno;
    throw_os_error(errc::protection_failed, "cannot change a secret's memory protection", "mprotect", err);
  }
  r.current = a;
}

}  // namespace securememory::detail
