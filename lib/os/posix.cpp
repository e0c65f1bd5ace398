// securememory internal: lib/os/ implementation (Linux).
//
// Theory of operation: see os.hpp. The hook is read with acquire ordering on
// every call; with no hook installed the cost is one atomic load.
#include "os/os.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <limits>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/capability.h>
#include <string_view>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

namespace securememory::detail::os {
namespace {

// Install hooks only while no other thread makes calls through this layer
// (tests do): the hook and its context are two separate atomics.
constinit std::atomic<fault_hook> current_hook{nullptr};
constinit std::atomic<void*> current_context{nullptr};
constinit std::atomic<unmap_observer> current_observer{nullptr};
constinit std::atomic<void*> observer_context{nullptr};

// Returns true (errno set) when the hook says this call must fail.
bool injected(call c) noexcept {
  const fault_hook hook = current_hook.load(std::memory_order_acquire);
  if (hook == nullptr) return false;
  const int err = hook(c, current_context.load(std::memory_order_acquire));
  if (err == 0) return false;
  errno = err;
  return true;
}

}  // namespace

const char* call_name(call c) noexcept {
  switch (c) {
    case call::mmap: return "mmap";
    case call::munmap: return "munmap";
    case call::mlock: return "mlock";
    case call::munlock: return "munlock";
    case call::mprotect: return "mprotect";
    case call::madvise: return "madvise";
    case call::memfd_secret: return "memfd_secret";
    case call::ftruncate: return "ftruncate";
    case call::close: return "close";
    case call::setrlimit: return "setrlimit";
    case call::prctl: return "prctl";
    case call::read: return "read";
    case call::count_: break;
  }
  return "?";
}

void set_fault_hook(fault_hook hook, void* context) noexcept {
  current_hook.store(nullptr, std::memory_order_release);
  current_context.store(context, std::memory_order_release);
  current_hook.store(hook, std::memory_order_release);
}

void set_unmap_observer(unmap_observer observer, void* context) noexcept {
  current_observer.store(nullptr, std::memory_order_release);
  observer_context.store(context, std::memory_order_release);
  current_observer.store(observer, std::memory_order_release);
}

std::size_t page_size() noexcept {
  static const std::size_t size = [] {
    const long v = sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<std::size_t>(v) : std::size_t{4096};
  }();
  return size;
}

void* map_anonymous(std::size_t length) noexcept {
  if (injected(call::mmap)) return nullptr;
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void* map_reserve(std::size_t length) noexcept {
  if (injected(call::mmap)) return nullptr;
  void* p = ::mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

int unmap(void* addr, std::size_t length) noexcept {
  if (injected(call::munmap)) return -1;
  const unmap_observer observer = current_observer.load(std::memory_order_acquire);
  if (observer != nullptr) observer(addr, length, observer_context.load(std::memory_order_acquire));
  return ::munmap(addr, length);
}

// mlock/munlock are made as raw system calls: AddressSanitizer intercepts
// the libc functions and turns them into no-ops that report success, which
// would make a sanitizer build claim locked pages it never locked.
int lock(void* addr, std::size_t length) noexcept {
  if (injected(call::mlock)) return -1;
  return static_cast<int>(::syscall(SYS_mlock, addr, length));
}

int lock_on_fault(void* addr, std::size_t length) noexcept {
  if (injected(call::mlock)) return -1;
  return static_cast<int>(::syscall(SYS_mlock2, addr, length, MLOCK_ONFAULT));
}

int unlock(void* addr, std::size_t length) noexcept {
  if (injected(call::munlock)) return -1;
  return static_cast<int>(::syscall(SYS_munlock, addr, length));
}

int protect(void* addr, std::size_t length, int prot) noexcept {
  if (injected(call::mprotect)) return -1;
  return ::mprotect(addr, length, prot);
}

int advise(void* addr, std::size_t length, int advice) noexcept {
  if (injected(call::madvise)) return -1;
  return ::madvise(addr, length, advice);
}

int exclude_from_core_dumps(void* addr, std::size_t length) noexcept { return advise(addr, length, MADV_DONTDUMP); }
int wipe_on_fork(void* addr, std::size_t length) noexcept { return advise(addr, length, MADV_WIPEONFORK); }
int drop_on_fork(void* addr, std::size_t length) noexcept { return advise(addr, length, MADV_DONTFORK); }

// glibc has no wrapper for memfd_secret; the number is 447 on every
// architecture that implements it.
#ifndef SYS_memfd_secret
#define SYS_memfd_secret 447
#endif

int memfd_secret(unsigned flags) noexcept {
  if (injected(call::memfd_secret)) return -1;
  return static_cast<int>(::syscall(SYS_memfd_secret, flags));
}

int truncate_fd(int fd, std::size_t length) noexcept {
  if (injected(call::ftruncate)) return -1;
  if (length > static_cast<std::size_t>(std::numeric_limits<off_t>::max())) {
    errno = EFBIG;
    return -1;
  }
  return ::ftruncate(fd, static_cast<off_t>(length));
}

void* map_shared(int fd, std::size_t length, void* at) noexcept {
  if (injected(call::mmap)) return nullptr;
  void* p = ::mmap(at, length, PROT_NONE, MAP_SHARED | (at != nullptr ? MAP_FIXED : 0), fd, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void* map_guard(void* addr, std::size_t length) noexcept {
  if (injected(call::mmap)) return nullptr;
  void* p = ::mmap(addr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

int close_fd(int fd) noexcept {
  if (injected(call::close)) return -1;
  return ::close(fd);
}

long read_fd(int fd, void* buf, std::size_t length) noexcept {
  if (injected(call::read)) return -1;
  return static_cast<long>(::read(fd, buf, length));
}

int get_limit(int resource, rlimit& out) noexcept {
  return ::getrlimit(static_cast<__rlimit_resource>(resource), &out);
}

int set_limit(int resource, const rlimit& value) noexcept {
  if (injected(call::setrlimit)) return -1;
  return ::setrlimit(static_cast<__rlimit_resource>(resource), &value);
}

int process_control(int option, unsigned long arg2) noexcept {
  if (injected(call::prctl)) return -1;
  return ::prctl(option, arg2, 0UL, 0UL, 0UL);
}

bool memlock_limit(rlimit& out) noexcept { return ::getrlimit(RLIMIT_MEMLOCK, &out) == 0; }

bool memlock_unbounded() noexcept {
  rlimit lim{};
  if (memlock_limit(lim) && lim.rlim_cur == RLIM_INFINITY) return true;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, 2> data{};
  if (::syscall(SYS_capget, &header, data.data()) != 0) return false;
  return (data[0].effective & (1U << CAP_IPC_LOCK)) != 0;
}

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

const char* errno_text(int err, char* buf, std::size_t len) noexcept {
  const char* name = strerrorname_np(err);
  const char* desc = strerrordesc_np(err);
  (void)std::snprintf(buf, len, "%s (%s)", name != nullptr ? name : "errno", desc != nullptr ? desc : "unknown error");
  return buf;
}

}  // namespace securememory::detail::os
