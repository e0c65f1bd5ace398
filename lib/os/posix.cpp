// securememory internal: lib/os/, what every POSIX system has.
//
// Theory of operation: see os.hpp. The hook is read with acquire ordering on
// every call; with no hook installed the cost is one atomic load. Only
// POSIX calls here (mmap, munmap, mprotect, ftruncate, close, read,
// getrlimit/setrlimit, sysconf); mlock/munlock go through the platform
// file (platform.hpp), which also holds everything a platform adds.
#include "os/os.hpp"
#include "os/platform.hpp"

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sys/mman.h>
#include <sys/resource.h>
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

// MAP_ANONYMOUS is POSIX since 2024; older macOS headers name it MAP_ANON.
#if defined(MAP_ANONYMOUS)
constexpr int map_anon = MAP_ANONYMOUS;
#else
constexpr int map_anon = MAP_ANON;
#endif
// MAP_NORESERVE (no swap reserved for address space only) is not POSIX:
// Linux has it, FreeBSD dropped it.
#if defined(MAP_NORESERVE)
constexpr int map_noreserve = MAP_NORESERVE;
#else
constexpr int map_noreserve = 0;
#endif

// getrlimit/setrlimit take an int on most systems and an enum in glibc.
template <class Resource>
int call_getrlimit(int (*fn)(Resource, rlimit*), int resource, rlimit& out) noexcept {
  return fn(static_cast<Resource>(resource), &out);
}
template <class Resource>
int call_setrlimit(int (*fn)(Resource, const rlimit*), int resource, const rlimit& value) noexcept {
  return fn(static_cast<Resource>(resource), &value);
}

// strerror_r is the XSI one (int) on most systems and the GNU one (char*)
// in glibc with _GNU_SOURCE.
[[maybe_unused]] const char* error_description(int rc, const char* buf) noexcept { return rc == 0 ? buf : nullptr; }
[[maybe_unused]] const char* error_description(const char* text, const char* /*buf*/) noexcept { return text; }

}  // namespace

bool platform::injected(call c) noexcept {
  const fault_hook hook = current_hook.load(std::memory_order_acquire);
  if (hook == nullptr) return false;
  const int err = hook(c, current_context.load(std::memory_order_acquire));
  if (err == 0) return false;
  errno = err;
  return true;
}

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
    case call::minherit: return "minherit";
    case call::procctl: return "procctl";
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

namespace {
// Read while the library loads: a forked child never finds it half-read by
// a thread it does not have (detail::made_at_load).
[[maybe_unused]] const std::size_t page_size_at_load = page_size();
}  // namespace

void* map_anonymous(std::size_t length) noexcept {
  if (platform::injected(call::mmap)) return nullptr;
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | map_anon, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void* map_reserve(std::size_t length) noexcept {
  if (platform::injected(call::mmap)) return nullptr;
  void* p = ::mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | map_anon | map_noreserve, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

int unmap(void* addr, std::size_t length) noexcept {
  if (platform::injected(call::munmap)) return -1;
  const unmap_observer observer = current_observer.load(std::memory_order_acquire);
  if (observer != nullptr) observer(addr, length, observer_context.load(std::memory_order_acquire));
  return ::munmap(addr, length);
}

int lock(void* addr, std::size_t length) noexcept {
  if (platform::injected(call::mlock)) return -1;
  return platform::mlock(addr, length);
}

int unlock(void* addr, std::size_t length) noexcept {
  if (platform::injected(call::munlock)) return -1;
  return platform::munlock(addr, length);
}

int protect(void* addr, std::size_t length, int prot) noexcept {
  if (platform::injected(call::mprotect)) return -1;
  return ::mprotect(addr, length, prot);
}

int truncate_fd(int fd, std::size_t length) noexcept {
  if (platform::injected(call::ftruncate)) return -1;
  if (length > static_cast<std::size_t>(std::numeric_limits<off_t>::max())) {
    errno = EFBIG;
    return -1;
  }
  return ::ftruncate(fd, static_cast<off_t>(length));
}

void* map_shared(int fd, std::size_t length, void* at) noexcept {
  if (platform::injected(call::mmap)) return nullptr;
  void* p = ::mmap(at, length, PROT_NONE, MAP_SHARED | (at != nullptr ? MAP_FIXED : 0), fd, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void* map_guard(void* addr, std::size_t length) noexcept {
  if (platform::injected(call::mmap)) return nullptr;
  void* p = ::mmap(addr, length, PROT_NONE, MAP_PRIVATE | map_anon | MAP_FIXED, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

int close_fd(int fd) noexcept {
  if (platform::injected(call::close)) return -1;
  return ::close(fd);
}

long read_fd(int fd, void* buf, std::size_t length) noexcept {
  if (platform::injected(call::read)) return -1;
  return static_cast<long>(::read(fd, buf, length));
}

int get_limit(int resource, rlimit& out) noexcept { return call_getrlimit(::getrlimit, resource, out); }

int set_limit(int resource, const rlimit& value) noexcept {
  if (platform::injected(call::setrlimit)) return -1;
  return call_setrlimit(::setrlimit, resource, value);
}

bool memlock_limit(rlimit& out) noexcept { return get_limit(RLIMIT_MEMLOCK, out) == 0; }

bool memlock_unbounded() noexcept {
  rlimit lim{};
  if (memlock_limit(lim) && lim.rlim_cur == RLIM_INFINITY) return true;
  return lock_privileged();
}

const char* errno_text(int err, char* buf, std::size_t len) noexcept {
  const char* name = platform::errno_name(err);
  std::array<char, 24> number{};
  if (name == nullptr) {
    (void)std::snprintf(number.data(), number.size(), "errno %d", err);
    name = number.data();
  }
  std::array<char, 128> desc_buf{};
  const char* desc = platform::errno_description(err);
  if (desc == nullptr) desc = error_description(::strerror_r(err, desc_buf.data(), desc_buf.size()), desc_buf.data());
  (void)std::snprintf(buf, len, "%s (%s)", name, desc != nullptr && *desc != '\0' ? desc : "unknown error");
  return buf;
}

const char* platform::common_errno_name(int err) noexcept {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ERANGE: return "ERANGE";
    case ENOSYS: return "ENOSYS";
    case EOVERFLOW: return "EOVERFLOW";
    case ENOTSUP: return "ENOTSUP";
    case ESRCH: return "ESRCH";
    default: return nullptr;
  }
}

}  // namespace securememory::detail::os
