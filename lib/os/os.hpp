// securememory internal: the thin operating-system layer.
//
// Theory of operation: every system call the library makes goes through one
// function here. Each returns 0 (or a pointer) on success and -1 (or
// nullptr) with errno set on failure, exactly like the call it wraps, so the
// callers keep the usual error handling. Before the real call each function
// asks the fault hook whether to fail instead: tests use it to make any call
// fail with any errno (fmt's posix-mock idea) without touching the kernel.
// Nothing in this header is exported from the shared library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/resource.h>

namespace securememory::detail::os {

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
/// mlock2(addr, length, MLOCK_ONFAULT): charged against RLIMIT_MEMLOCK like
/// lock(), but no page is faulted in. Shares call::mlock with lock().
int lock_on_fault(void* addr, std::size_t length) noexcept;
int unlock(void* addr, std::size_t length) noexcept;
int protect(void* addr, std::size_t length, int prot) noexcept;
int advise(void* addr, std::size_t length, int advice) noexcept;
/// Keeps the pages out of core dumps (MADV_DONTDUMP). Returns like advise().
int exclude_from_core_dumps(void* addr, std::size_t length) noexcept;
/// A forked child gets these pages zero-filled (MADV_WIPEONFORK; private
/// anonymous mappings only). Returns like advise().
int wipe_on_fork(void* addr, std::size_t length) noexcept;
/// A forked child gets no mapping here at all (MADV_DONTFORK). Returns like
/// advise().
int drop_on_fork(void* addr, std::size_t length) noexcept;

/// memfd_secret(2) (syscall 447, Linux 5.14+): a descriptor for memory that
/// is removed from the kernel's direct map; -1 with errno on failure (ENOSYS
/// when the kernel lacks it or it is disabled).
int memfd_secret(unsigned flags) noexcept;
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
/// prctl(option, arg2, 0, 0, 0); returns like prctl.
int process_control(int option, unsigned long arg2) noexcept;

/// getrlimit(RLIMIT_MEMLOCK); false if it failed.
bool memlock_limit(rlimit& out) noexcept;

/// True when RLIMIT_MEMLOCK cannot be what refused a lock: the process has
/// CAP_IPC_LOCK in its effective set, or the soft limit is unlimited.
bool memlock_unbounded() noexcept;

/// Mappings of this process now (lines of /proc/self/maps), or -1.
long mapping_count() noexcept;
/// vm.max_map_count (/proc/sys/vm/max_map_count), or -1.
long max_map_count() noexcept;

/// "ENOMEM (Cannot allocate memory)".
const char* errno_text(int err, char* buf, std::size_t len) noexcept;

}  // namespace securememory::detail::os
