// securememory internal: the thin operating-system layer.
//
// Theory of operation: every system call the library makes goes through one
// function here. Each returns 0 (or a pointer) on success and -1 (or
// nullptr) with errno set on failure, exactly like the call it wraps, so the
// callers keep the usual error handling. Before the real call each function
// asks the fault hook whether to fail instead: tests use it to make any call
// fail with any errno (fmt's posix-mock idea) without touching the kernel.
// Nothing in this header is exported from the shared library.
//
// Files: posix.cpp is what every POSIX system has (mmap, munmap, mprotect,
// mlock, getrlimit/setrlimit, sysconf, read, close, the hooks). What one
// platform adds lives in that platform's file: linux.cpp (madvise
// MADV_DONTDUMP/WIPEONFORK/DONTFORK, memfd_secret, mlock2, /proc, capget,
// prctl), macos.cpp (minherit VM_INHERIT_NONE), freebsd.cpp (MADV_NOCORE,
// minherit INHERIT_ZERO/NONE, procctl), posix_only.cpp (nothing more: the
// posix_only build, and any other POSIX system). A platform that lacks a
// feature says so through the capability functions below (and its calls
// fail with ENOSYS), so that each backend's describe() reports what this
// build on this host really provides. docs/design.md ("Platforms") says
// which of these files have been run and which are written from the
// manual pages only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/resource.h>

namespace securememory::detail::os {

// ---- POSIX (posix.cpp) --------------------------------------------------------------

/// The system calls that can be made to fail.
enum class call : unsigned char {
  mmap,
  munmap,
  mlock,
  munlock,
  mprotect,
  madvise,
  memfd_secret,
  ftruncate,
  close,
  setrlimit,
  prctl,
  read,
  minherit,  ///< macOS and FreeBSD: the fork rule
  procctl,   ///< FreeBSD: the tracing control
  count_,
};

/// Name of a call ("mlock"), for messages.
const char* call_name(call c) noexcept;

/// A fault hook returns 0 to let the call through, or an errno value to make
/// it fail with. It may be called from any thread.
using fault_hook = int (*)(call c, void* context) noexcept;

/// Installs a hook (nullptr removes it). Not for production use.
void set_fault_hook(fault_hook hook, void* context) noexcept;

/// The page size (sysconf(_SC_PAGESIZE)), cached.
std::size_t page_size() noexcept;

void* map_anonymous(std::size_t length) noexcept;  // PROT_READ|PROT_WRITE, private; nullptr on failure
/// mmap(nullptr, length, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE):
/// address space only, no memory. Shares call::mmap with map_anonymous.
void* map_reserve(std::size_t length) noexcept;
int unmap(void* addr, std::size_t length) noexcept;
int lock(void* addr, std::size_t length) noexcept;
int unlock(void* addr, std::size_t length) noexcept;
int protect(void* addr, std::size_t length, int prot) noexcept;

// ---- what a platform adds to POSIX (linux.cpp, macos.cpp, ...) --------------------

/// The platform file this build uses: "linux", "macos", "freebsd", or
/// "posix" (the posix_only build, or a POSIX system without a file of its own).
const char* platform_name() noexcept;

/// True when exclude_from_core_dumps() works in this build (Linux
/// MADV_DONTDUMP, FreeBSD MADV_NOCORE). Elsewhere a core dump holds every
/// page: harden_process() (RLIMIT_CORE 0) is the way to keep secrets out.
bool can_exclude_from_core_dumps() noexcept;
/// Keeps the pages out of core dumps; -1 with errno (ENOSYS where
/// can_exclude_from_core_dumps() is false). Fault-injected as call::madvise.
int exclude_from_core_dumps(void* addr, std::size_t length) noexcept;
/// The call exclude_from_core_dumps() makes and what the host needs for it,
/// for messages ("madvise(MADV_DONTDUMP)", "Linux 3.4+ is required").
const char* core_dump_exclusion_call() noexcept;
const char* core_dump_exclusion_needs() noexcept;

/// What a forked child sees of private anonymous pages that went through
/// hide_from_fork().
enum class fork_rule : unsigned char {
  none,  ///< a copy of every byte: this build cannot hide them
  wipe,  ///< zero-filled pages at the same address (Linux MADV_WIPEONFORK, FreeBSD INHERIT_ZERO)
  drop,  ///< nothing mapped there at all (macOS VM_INHERIT_NONE): the child must not unmap it
};
/// The rule hide_from_fork() applies in this build.
fork_rule fork_hiding() noexcept;
/// Applies fork_hiding() to private anonymous pages; -1 with errno (ENOSYS
/// where it is none). Fault-injected as call::madvise (Linux) or
/// call::minherit.
int hide_from_fork(void* addr, std::size_t length) noexcept;
/// The call hide_from_fork() makes and what the host needs for it, for messages.
const char* fork_hiding_call() noexcept;
const char* fork_hiding_needs() noexcept;
/// A forked child gets no mapping here at all (Linux MADV_DONTFORK, for
/// the shared mappings of memfd_secret files); -1 with errno (ENOSYS
/// elsewhere: only secretmem, Linux only, uses it).
int drop_on_fork(void* addr, std::size_t length) noexcept;

/// True when lock_on_fault() works in this build (Linux mlock2).
bool can_lock_on_fault() noexcept;
/// mlock2(addr, length, MLOCK_ONFAULT): charged against RLIMIT_MEMLOCK like
/// lock(), but no page is faulted in. Shares call::mlock with lock(); -1
/// with ENOSYS where can_lock_on_fault() is false.
int lock_on_fault(void* addr, std::size_t length) noexcept;

/// Asks for transparent huge pages on an anonymous range (Linux
/// MADV_HUGEPAGE); a hint only: -1 with errno (ENOSYS where there is no such
/// hint), and plain pages either way. Not fault-injected.
int prefer_huge_pages(void* addr, std::size_t length) noexcept;

/// memfd_secret(2) (syscall 447, Linux 5.14+): a descriptor for memory that
/// is removed from the kernel's direct map; -1 with errno on failure (ENOSYS
/// when the kernel lacks it or it is disabled, and on every other platform).
int memfd_secret(unsigned flags) noexcept;

// ---- POSIX again (posix.cpp) ------------------------------------------------------

/// ftruncate(fd, length); -1 with errno EFBIG when length does not fit off_t.
int truncate_fd(int fd, std::size_t length) noexcept;
/// mmap(at, length, PROT_NONE, MAP_SHARED | (at ? MAP_FIXED : 0), fd, 0): a
/// no-access shared mapping of the file's first `length` bytes, anywhere or
/// in place of what is mapped at `at`; nullptr with errno on failure.
/// Shares call::mmap with map_anonymous.
void* map_shared(int fd, std::size_t length, void* at = nullptr) noexcept;
/// mmap(addr, length, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED): puts
/// a no-access anonymous mapping (a guard, holding no memory) in place of
/// whatever is mapped at addr; nullptr with errno on failure. Shares
/// call::mmap with map_anonymous.
void* map_guard(void* addr, std::size_t length) noexcept;
/// close(fd).
int close_fd(int fd) noexcept;
/// read(fd, buf, length); returns like read (-1 and errno, 0 at the end).
long read_fd(int fd, void* buf, std::size_t length) noexcept;
/// Called by unmap() with the range right before it is unmapped (after the
/// fault hook let the call through). Tests and securememory-audit use it to
/// inspect what the pages hold at the moment they are given back. It may be
/// called from any thread and must not unmap memory itself.
using unmap_observer = void (*)(void* addr, std::size_t length, void* context) noexcept;

/// Installs an observer (nullptr removes it). Not for production use.
void set_unmap_observer(unmap_observer observer, void* context) noexcept;

/// getrlimit(resource); 0 or -1 and errno. Not fault-injected (it cannot
/// change anything).
int get_limit(int resource, rlimit& out) noexcept;
/// setrlimit(resource, value); 0 or -1 and errno.
int set_limit(int resource, const rlimit& value) noexcept;

/// getrlimit(RLIMIT_MEMLOCK); false if it failed.
bool memlock_limit(rlimit& out) noexcept;
/// True when RLIMIT_MEMLOCK cannot be what refused a lock: the soft limit
/// is unlimited, or the process is privileged to lock past it
/// (lock_privileged()).
bool memlock_unbounded() noexcept;

/// "ENOMEM (Cannot allocate memory)".
const char* errno_text(int err, char* buf, std::size_t len) noexcept;

// ---- what a platform adds, continued ---------------------------------------------

/// Whether processes of the same user may trace this one: 0 when tracing
/// (and dumping) is forbidden, else a positive value (Linux: PR_GET_DUMPABLE,
/// 1 or 2; FreeBSD: 1); -1 with errno (ENOSYS where the platform has no such
/// control: macOS, posix_only). Fault-injected as call::prctl (Linux) or
/// call::procctl (FreeBSD).
int get_traceable() noexcept;
/// Forbids it (Linux prctl(PR_SET_DUMPABLE, 0), FreeBSD
/// procctl(PROC_TRACE_CTL_DISABLE)); 0 or -1 with errno (ENOSYS as above).
int forbid_tracing() noexcept;
/// The calls get_traceable() and forbid_tracing() make, for messages
/// ("prctl(PR_GET_DUMPABLE)"), or nullptr where there are none.
const char* get_traceable_call() noexcept;
const char* forbid_tracing_call() noexcept;

/// Linux: CAP_IPC_LOCK in the effective set (capget); FreeBSD: root;
/// elsewhere false (cannot tell).
bool lock_privileged() noexcept;
/// What grants that privilege, for messages ("CAP_IPC_LOCK").
const char* lock_privilege_name() noexcept;

/// Mappings of this process now (Linux: lines of /proc/self/maps), or -1
/// where this build cannot count them.
long mapping_count() noexcept;
/// vm.max_map_count (Linux: /proc/sys/vm/max_map_count), or -1 where there
/// is no such limit or this build cannot read it.
long max_map_count() noexcept;

}  // namespace securememory::detail::os
