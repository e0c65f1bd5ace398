// securememory internal: lib/os/, what Linux adds to POSIX.
//
// Theory of operation: see os.hpp. Linux gives every feature the library
// knows: per-region dump exclusion (MADV_DONTDUMP, 3.4+), fork rules
// (MADV_WIPEONFORK for private memory, 4.14+; MADV_DONTFORK for shared
// mappings), memfd_secret (5.14+), mlock2 MLOCK_ONFAULT (4.4+), the map
// count (/proc), CAP_IPC_LOCK (capget) and the dumpable flag (prctl).
// mlock/munlock are raw system calls (see platform.hpp).
#include "os/os.hpp"
#include "os/platform.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

namespace securememory::detail::os {

using platform::injected;

const char* platform_name() noexcept { return "linux"; }

int platform::mlock(void* addr, std::size_t length) noexcept {
  return static_cast<int>(::syscall(SYS_mlock, addr, length));
}

int platform::munlock(void* addr, std::size_t length) noexcept {
  return static_cast<int>(::syscall(SYS_munlock, addr, length));
}

const char* platform::errno_name(int err) noexcept { return strerrorname_np(err); }
const char* platform::errno_description(int err) noexcept { return strerrordesc_np(err); }

namespace {

int advise(void* addr, std::size_t length, int advice) noexcept {
  if (injected(call::madvise)) return -1;
  return ::madvise(addr, length, advice);
}

}  // namespace

bool can_exclude_from_core_dumps() noexcept { return true; }
int exclude_from_core_dumps(void* addr, std::size_t length) noexcept { return advise(addr, length, MADV_DONTDUMP); }
const char* core_dump_exclusion_call() noexcept { return "madvise(MADV_DONTDUMP)"; }
const char* core_dump_exclusion_needs() noexcept { return "this kernel may be too old (Linux 3.4+ is required)"; }

fork_rule fork_hiding() noexcept { return fork_rule::wipe; }
int hide_from_fork(void* addr, std::size_t length) noexcept { return advise(addr, length, MADV_WIPEONFORK); }
const char* fork_hiding_call() noexcept { return "madvise(MADV_WIPEONFORK)"; }
const char* fork_hiding_needs() noexcept { return "this kernel may be too old (Linux 4.14+ is required)"; }
int drop_on_fork(void* addr, std::size_t length) noexcept { return advise(addr, length, MADV_DONTFORK); }

bool can_lock_on_fault() noexcept { return true; }

int lock_on_fault(void* addr, std::size_t length) noexcept {
  if (injected(call::mlock)) return -1;
  return static_cast<int>(::syscall(SYS_mlock2, addr, length, MLOCK_ONFAULT));
}

// glibc has no wrapper for memfd_secret; the number is 447 on every
// architecture that implements it.
#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

int prefer_huge_pages(void* addr, std::size_t length) noexcept { return ::madvise(addr, length, MADV_HUGEPAGE); }
int memfd_secret(unsigned flags) noexcept {
  if (injected(call::memfd_secret)) return -1;
  return static_cast<int>(::syscall(SYS_memfd_secret, flags));
}

int get_traceable() noexcept {
  if (injected(call::prctl)) return -1;
  return ::prctl(PR_GET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
}

int forbid_tracing() noexcept {
  if (injected(call::prctl)) return -1;
  return ::prctl(PR_SET_DUMPABLE, 0UL, 0UL, 0UL, 0UL);
}

const char* get_traceable_call() noexcept { return "prctl(PR_GET_DUMPABLE)"; }
const char* forbid_tracing_call() noexcept { return "prctl(PR_SET_DUMPABLE, 0)"; }

bool lock_privileged() noexcept {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, 2> data{};
  if (::syscall(SYS_capget, &header, data.data()) != 0) return false;
  return (data[0].effective & (1U << CAP_IPC_LOCK)) != 0;
}

const char* lock_privilege_name() noexcept { return "CAP_IPC_LOCK"; }

namespace {

// Reads a small /proc file into buf (NUL-terminated); the bytes read, or -1.
// NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
long read_small_file(const char* path, char* buf, std::size_t size) noexcept {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  const ssize_t n = ::read(fd, buf, size - 1);
  ::close(fd);
  if (n < 0) return -1;
  buf[n] = '\0';
  return n;
}

}  // namespace

long mapping_count() noexcept {
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  std::array<char, 8192> buf{};
  long lines = 0;
  for (ssize_t n; (n = ::read(fd, buf.data(), buf.size())) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      lines = -1;
      break;
    }
    lines += std::count(buf.data(), buf.data() + n, '\n');
  }
  ::close(fd);
  return lines;
}

long max_map_count() noexcept {
  std::array<char, 32> buf{};
  if (read_small_file("/proc/sys/vm/max_map_count", buf.data(), buf.size()) <= 0) return -1;
  return std::strtol(buf.data(), nullptr, 10);
}

}  // namespace securememory::detail::os
