// securememory internal: lib/os/, what FreeBSD adds to POSIX.
//
// WRITTEN FROM THE MANUAL PAGES ONLY: no FreeBSD machine has compiled or
// run this file (docs/design.md, "Platforms"). What it relies on:
//   - madvise(2) MADV_NOCORE: the region is not included in a core file.
//   - minherit(2) INHERIT_ZERO (FreeBSD 12.0+): a forked child gets new
//     zero-filled pages there (the fork rule is wipe, as on Linux); older
//     headers without it leave the rule at none. INHERIT_NONE: the child
//     has no mapping there (drop_on_fork).
//   - procctl(2) PROC_TRACE_STATUS / PROC_TRACE_CTL_DISABLE (10.2+):
//     tracing of this process is disabled until it executes another
//     program (harden_process()'s second step).
//   - Root may lock memory past RLIMIT_MEMLOCK (PRIV_VM_MLOCK).
//   - No mlock2, no memfd_secret, no map count to read.
#include "os/os.hpp"
#include "os/platform.hpp"

#include <cerrno>
#include <sys/mman.h>
#include <sys/procctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace securememory::detail::os {
namespace {

using platform::injected;

int not_provided() noexcept {
  errno = ENOSYS;
  return -1;
}

int inherit(void* addr, std::size_t length, int how) noexcept {
  if (injected(call::minherit)) return -1;
  return ::minherit(addr, length, how);
}

}  // namespace

const char* platform_name() noexcept { return "freebsd"; }

// Under a sanitizer, past its interceptor (platform.hpp).
int platform::mlock(void* addr, std::size_t length) noexcept {
  if constexpr (sanitized()) return ::syscall(SYS_mlock, addr, length);
  return ::mlock(addr, length);
}

int platform::munlock(void* addr, std::size_t length) noexcept {
  if constexpr (sanitized()) return ::syscall(SYS_munlock, addr, length);
  return ::munlock(addr, length);
}

const char* platform::errno_name(int err) noexcept { return common_errno_name(err); }
const char* platform::errno_description(int /*err*/) noexcept { return nullptr; }

bool can_exclude_from_core_dumps() noexcept { return true; }

int exclude_from_core_dumps(void* addr, std::size_t length) noexcept {
  if (injected(call::madvise)) return -1;
  return ::madvise(addr, length, MADV_NOCORE);
}

const char* core_dump_exclusion_call() noexcept { return "madvise(MADV_NOCORE)"; }
const char* core_dump_exclusion_needs() noexcept { return "the range must be mapped"; }

#if defined(INHERIT_ZERO)
fork_rule fork_hiding() noexcept { return fork_rule::wipe; }
int hide_from_fork(void* addr, std::size_t length) noexcept { return inherit(addr, length, INHERIT_ZERO); }
#else
fork_rule fork_hiding() noexcept { return fork_rule::none; }
int hide_from_fork(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }
#endif
const char* fork_hiding_call() noexcept { return "minherit(INHERIT_ZERO)"; }
const char* fork_hiding_needs() noexcept { return "FreeBSD 12.0+ is required"; }
int drop_on_fork(void* addr, std::size_t length) noexcept { return inherit(addr, length, INHERIT_NONE); }

bool can_lock_on_fault() noexcept { return false; }
int lock_on_fault(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }

int prefer_huge_pages(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }
int memfd_secret(unsigned /*flags*/) noexcept { return not_provided(); }

int get_traceable() noexcept {
  if (injected(call::procctl)) return -1;
  int status = 0;
  if (::procctl(P_PID, ::getpid(), PROC_TRACE_STATUS, &status) != 0) return -1;
  return status == -1 ? 0 : 1;  // -1: disabled; 0: enabled; a pid: traced now
}

int forbid_tracing() noexcept {
  if (injected(call::procctl)) return -1;
  int disable = PROC_TRACE_CTL_DISABLE;
  return ::procctl(P_PID, ::getpid(), PROC_TRACE_CTL, &disable);
}

const char* get_traceable_call() noexcept { return "procctl(PROC_TRACE_STATUS)"; }
const char* forbid_tracing_call() noexcept { return "procctl(PROC_TRACE_CTL, PROC_TRACE_CTL_DISABLE)"; }

bool lock_privileged() noexcept { return ::geteuid() == 0; }
const char* lock_privilege_name() noexcept { return "root (PRIV_VM_MLOCK)"; }

long mapping_count() noexcept { return -1; }
long max_map_count() noexcept { return -1; }

}  // namespace securememory::detail::os
