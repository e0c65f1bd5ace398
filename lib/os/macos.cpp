// securememory internal: lib/os/, what macOS adds to POSIX.
//
// WRITTEN FROM THE MANUAL PAGES ONLY: no macOS machine has compiled or run
// this file (docs/design.md, "Platforms"). What it relies on:
//   - minherit(2): VM_INHERIT_NONE leaves the pages out of a forked child
//     (nothing is mapped there). macOS has no zero-fill inheritance, so the
//     fork rule is drop: a child must never unmap a parent's range (the
//     address may hold a mapping of its own by then).
//   - No per-region core-dump exclusion (no MADV_DONTDUMP or MADV_NOCORE):
//     a core dump holds every page; harden_process() (RLIMIT_CORE 0) is the
//     way to keep secrets out of it, as the original package did.
//   - No tracing control that harden_process() can use:
//     ptrace(PT_DENY_ATTACH) kills a process that is being traced and
//     cannot be undone, and root reads memory through task_for_pid anyway;
//     it is not made.
//   - No mlock2, no memfd_secret, no map count, no lock privilege to ask.
// MAP_ANON is handled in posix.cpp.
#include "os/os.hpp"
#include "os/platform.hpp"

#include <cerrno>
#include <mach/vm_inherit.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
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

// Under a sanitizer, mlock/munlock go past its interceptor (platform.hpp)
// through syscall(2), which macOS marks deprecated but still provides.
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
int raw_call(int number, void* addr, std::size_t length) noexcept { return ::syscall(number, addr, length); }
#pragma clang diagnostic pop

}  // namespace

const char* platform_name() noexcept { return "macos"; }

int platform::mlock(void* addr, std::size_t length) noexcept {
  if constexpr (sanitized()) return raw_call(SYS_mlock, addr, length);
  return ::mlock(addr, length);
}

int platform::munlock(void* addr, std::size_t length) noexcept {
  if constexpr (sanitized()) return raw_call(SYS_munlock, addr, length);
  return ::munlock(addr, length);
}

const char* platform::errno_name(int err) noexcept { return common_errno_name(err); }
const char* platform::errno_description(int /*err*/) noexcept { return nullptr; }

bool can_exclude_from_core_dumps() noexcept { return false; }
int exclude_from_core_dumps(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }
const char* core_dump_exclusion_call() noexcept { return "per-region core-dump exclusion"; }
const char* core_dump_exclusion_needs() noexcept {
  return "macOS has none; harden_process() turns core dumps off for the whole process";
}

fork_rule fork_hiding() noexcept { return fork_rule::drop; }
int hide_from_fork(void* addr, std::size_t length) noexcept { return inherit(addr, length, VM_INHERIT_NONE); }
const char* fork_hiding_call() noexcept { return "minherit(VM_INHERIT_NONE)"; }
const char* fork_hiding_needs() noexcept { return "the range must be mapped"; }
int drop_on_fork(void* addr, std::size_t length) noexcept { return inherit(addr, length, VM_INHERIT_NONE); }

bool can_lock_on_fault() noexcept { return false; }
int lock_on_fault(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }

int prefer_huge_pages(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }
int memfd_secret(unsigned /*flags*/) noexcept { return not_provided(); }

int get_traceable() noexcept { return not_provided(); }
int forbid_tracing() noexcept { return not_provided(); }
const char* get_traceable_call() noexcept { return nullptr; }
const char* forbid_tracing_call() noexcept { return nullptr; }

bool lock_privileged() noexcept { return false; }
const char* lock_privilege_name() noexcept { return "a higher system wired-memory limit"; }

long mapping_count() noexcept { return -1; }
long max_map_count() noexcept { return -1; }

}  // namespace securememory::detail::os
