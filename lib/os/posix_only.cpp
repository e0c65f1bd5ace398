// securememory internal: lib/os/ for a POSIX system with nothing more.
//
// Theory of operation: see os.hpp. This file is the platform part of the
// posix_only build (meson option; run on Linux in CI, as a macOS build
// would be, without any Linux extra) and of any POSIX system without a
// file of its own. Everything beyond POSIX is reported as not provided:
// no per-region dump exclusion, no fork rule, no mlock2, no memfd_secret,
// no tracing control, no map count, no lock privilege it can see. Each
// such call fails with ENOSYS, and the callers never make it (they ask the
// capability first). A build with a sanitizer makes mlock/munlock raw
// system calls where <sys/syscall.h> has them: the sanitizers turn the libc
// functions into no-ops (platform.hpp); it is the same call, not an extra.
#include "os/os.hpp"
#include "os/platform.hpp"

#include <cerrno>
#include <sys/mman.h>
#if __has_include(<sys/syscall.h>)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace securememory::detail::os {
namespace {

#if defined(SYS_mlock) && defined(SYS_munlock)
constexpr bool raw_lock_calls = platform::sanitized();
#else
constexpr bool raw_lock_calls = false;
#endif

int not_provided() noexcept {
  errno = ENOSYS;
  return -1;
}

}  // namespace

const char* platform_name() noexcept { return "posix"; }

int platform::mlock(void* addr, std::size_t length) noexcept {
#if defined(SYS_mlock)
  if constexpr (raw_lock_calls) return static_cast<int>(::syscall(SYS_mlock, addr, length));
#endif
  return ::mlock(addr, length);
}

int platform::munlock(void* addr, std::size_t length) noexcept {
#if defined(SYS_munlock)
  if constexpr (raw_lock_calls) return static_cast<int>(::syscall(SYS_munlock, addr, length));
#endif
  return ::munlock(addr, length);
}

const char* platform::errno_name(int err) noexcept { return common_errno_name(err); }
const char* platform::errno_description(int /*err*/) noexcept { return nullptr; }

bool can_exclude_from_core_dumps() noexcept { return false; }
int exclude_from_core_dumps(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }
const char* core_dump_exclusion_call() noexcept { return "per-region core-dump exclusion"; }
const char* core_dump_exclusion_needs() noexcept {
  return "this platform has none; harden_process() turns core dumps off for the whole process";
}

fork_rule fork_hiding() noexcept { return fork_rule::none; }
int hide_from_fork(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }
const char* fork_hiding_call() noexcept { return "hiding pages from forked children"; }
const char* fork_hiding_needs() noexcept { return "this platform has no way to"; }
int drop_on_fork(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }

bool can_lock_on_fault() noexcept { return false; }
int lock_on_fault(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }

int prefer_huge_pages(void* /*addr*/, std::size_t /*length*/) noexcept { return not_provided(); }
int memfd_secret(unsigned /*flags*/) noexcept { return not_provided(); }

int get_traceable() noexcept { return not_provided(); }
int forbid_tracing() noexcept { return not_provided(); }
const char* get_traceable_call() noexcept { return nullptr; }
const char* forbid_tracing_call() noexcept { return nullptr; }

bool lock_privileged() noexcept { return false; }
const char* lock_privilege_name() noexcept { return "the privilege to lock memory past RLIMIT_MEMLOCK"; }

long mapping_count() noexcept { return -1; }
long max_map_count() noexcept { return -1; }

}  // namespace securememory::detail::os
