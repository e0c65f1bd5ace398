// securememory proof: "the pages that held a secret were zero when they were
// unmapped".
//
// Theory of operation. While a check is armed, every unmapping that touches
// the secret's bytes is inspected at the moment it happens, before the
// pages go away:
//   - through the lib/os/ unmap observer (os::set_unmap_observer), which
//     sees every munmap the library itself makes (protectedmemory, and any
//     backend that follows the lib/os/ rule);
//   - through an interposed munmap(): this file defines `munmap`, so in a
//     program that links it (the tests, securememory-audit) the dynamic
//     linker resolves other libraries' calls (libsodium's sodium_free, used
//     by memguard) to it. It inspects, then calls the next munmap
//     (dlsym(RTLD_NEXT), i.e. a sanitizer's interceptor or libc's).
// A call seen by both is counted once, as seen by the lib/os/ hook.
// Inspection reads the bytes with process_vm_readv (fails on unreadable
// pages, never faults), falling back to /proc/self/mem (reads PROT_NONE
// pages too), into a buffer allocated before arming; memfd_secret pages,
// which neither reaches, are read directly under a SIGSEGV guard, after a
// momentary mprotect(PROT_READ) when they are PROT_NONE. The hooks allocate
// nothing and take no lock. Secret bytes that survive a close without being
// unmapped (a backend that keeps its pages) are inspected right after
// close() the same way. Only counts of non-zero bytes are kept.
#include "os/os.hpp"
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <securememory/registry.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <csignal>
#include <dlfcn.h>
#include <memory>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

namespace securememory::proof {
namespace {

struct watch_state {
  std::uintptr_t lo = 0;  // the secret's bytes: [lo, hi)
  std::uintptr_t hi = 0;
  std::byte* buffer = nullptr;  // hi - lo bytes, for inspection
  int mem_fd = -1;              // /proc/self/mem
  std::size_t seen_by_os = 0;   // bytes of the secret inspected at unmap, per mechanism
  std::size_t seen_by_interposer = 0;
  std::size_t nonzero = 0;      // non-zero bytes found at unmap
  std::size_t unreadable = 0;   // bytes that could not be inspected
};

constinit std::atomic<watch_state*> armed{nullptr};
constinit thread_local std::uintptr_t os_seen_addr = 0;  // last call the lib/os/ hook saw (dedup)
constinit thread_local bool inside_hook = false;

// Direct reads that may fault: a SIGSEGV/SIGBUS during probe_read()
// jumps back instead of killing the process.
constinit thread_local sigjmp_buf* volatile probe_jump = nullptr;  // volatile: read by the handler

void probe_fault(int) { siglongjmp(*probe_jump, 1); }

// Counts non-zero bytes in [lo, hi) by reading them directly; false if a
// read faulted.
// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): the bounds of an interval, in order
bool probe_read(std::uintptr_t lo, std::uintptr_t hi, std::size_t& nonzero) noexcept {
  struct sigaction fault{};
  struct sigaction old_segv{};
  struct sigaction old_bus{};
  fault.sa_handler = &probe_fault;
  sigemptyset(&fault.sa_mask);
  sigaction(SIGSEGV, &fault, &old_segv);
  sigaction(SIGBUS, &fault, &old_bus);
  sigjmp_buf jump;
  bool ok = false;
  probe_jump = &jump;
  std::atomic_signal_fence(std::memory_order_seq_cst);  // stored before the reads that may fault
  if (sigsetjmp(jump, 1) == 0) {
    std::size_t n = 0;
    for (std::uintptr_t a = lo; a < hi; ++a) {
      n += *reinterpret_cast<const volatile std::byte*>(a) != std::byte{0} ? 1 : 0;  // NOLINT(performance-no-int-to-ptr): reads addresses the unmap observer reported
    }
    nonzero = n;
    ok = true;
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  probe_jump = nullptr;
  sigaction(SIGSEGV, &old_segv, nullptr);
  sigaction(SIGBUS, &old_bus, nullptr);
  return ok;
}

// Counts the non-zero bytes in [lo, hi) of this process, or returns false.
// In order: process_vm_readv (readable pages), /proc/self/mem (also
// PROT_NONE pages), a direct read (memfd_secret pages, which neither of the
// two can reach), and last, for memfd_secret pages that are PROT_NONE, a
// direct read after mprotect(PROT_READ), putting PROT_NONE back.
bool inspect(watch_state& w, std::uintptr_t lo, std::uintptr_t hi, std::size_t& nonzero) noexcept {
  const std::size_t len = hi - lo;
  std::byte* out = w.buffer;
  iovec local{out, len};
  iovec remote{reinterpret_cast<void*>(lo), len};  // NOLINT(performance-no-int-to-ptr): an address the unmap observer reported
  ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  if (n != static_cast<ssize_t>(len) && w.mem_fd >= 0) n = pread(w.mem_fd, out, len, static_cast<off_t>(lo));
  if (n == static_cast<ssize_t>(len)) {
    nonzero = static_cast<std::size_t>(std::count_if(out, out + len, [](std::byte b) { return b != std::byte{0}; }));
    return true;
  }
  if (probe_read(lo, hi, nonzero)) return true;
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  auto* first = reinterpret_cast<void*>(lo / page * page);  // NOLINT(performance-no-int-to-ptr): page arithmetic
  const std::size_t span = (hi + page - 1) / page * page - lo / page * page;
  if (mprotect(first, span, PROT_READ) != 0) return false;  // not mapped
  const bool ok = probe_read(lo, hi, nonzero);
  mprotect(first, span, PROT_NONE);  // it was PROT_NONE: the direct read faulted
  return ok;
}

// Records what [addr, addr+length) holds of the secret; returns the bytes of
// the secret it covered.
std::size_t observe(void* addr, std::size_t length) noexcept {
  watch_state* w = armed.load(std::memory_order_acquire);
  if (w == nullptr) return 0;
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const std::uintptr_t lo = std::max(a, w->lo);
  const std::uintptr_t hi = std::min(a + length, w->hi);
  if (lo >= hi) return 0;
  std::size_t nonzero = 0;
  if (inspect(*w, lo, hi, nonzero)) {
    w->nonzero += nonzero;
  } else {
    w->unreadable += hi - lo;
  }
  return hi - lo;
}

void os_observer(void* addr, std::size_t length, void*) noexcept {
  watch_state* w = armed.load(std::memory_order_acquire);
  if (w == nullptr) return;
  w->seen_by_os += observe(addr, length);
  os_seen_addr = reinterpret_cast<std::uintptr_t>(addr);
}

using munmap_fn = int (*)(void*, std::size_t);
constinit std::atomic<munmap_fn> next_munmap{nullptr};

}  // namespace
}  // namespace securememory::proof

// The interposed munmap (see the file comment).
extern "C" int munmap(void* addr, std::size_t length) noexcept {
  using namespace securememory::proof;
  if (!inside_hook) {
    inside_hook = true;
    if (watch_state* w = armed.load(std::memory_order_acquire)) {
      if (os_seen_addr == reinterpret_cast<std::uintptr_t>(addr)) {
        os_seen_addr = 0;  // already inspected by the lib/os/ hook
      } else {
        w->seen_by_interposer += observe(addr, length);
      }
    }
    munmap_fn next = next_munmap.load(std::memory_order_acquire);
    if (next == nullptr) {
      next = reinterpret_cast<munmap_fn>(dlsym(RTLD_NEXT, "munmap"));
      next_munmap.store(next, std::memory_order_release);
    }
    inside_hook = false;
    if (next != nullptr) return next(addr, length);
  }
  return static_cast<int>(syscall(SYS_munmap, addr, length));  // re-entered while resolving
}

namespace securememory::proof {

struct wipe_watch::state {
  watch_state w;
  std::vector<std::byte> buffer;
};

wipe_watch::wipe_watch(const std::byte* data, std::size_t size) : state_(std::make_unique<state>()), size_(size) {
  state_->buffer.resize(size);
  watch_state& w = state_->w;
  w.lo = reinterpret_cast<std::uintptr_t>(data);
  w.hi = w.lo + size;
  w.buffer = state_->buffer.data();
  w.mem_fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
  detail::os::set_unmap_observer(&os_observer, nullptr);
  armed.store(&w, std::memory_order_release);
}

wipe_watch::~wipe_watch() { disarm(); }

void wipe_watch::disarm() noexcept {
  if (!state_ || armed.load(std::memory_order_acquire) != &state_->w) return;
  armed.store(nullptr, std::memory_order_release);
  detail::os::set_unmap_observer(nullptr, nullptr);
  os_seen_addr = 0;
}

result wipe_watch::finish() {
  disarm();
  watch_state& w = state_->w;
  // Bytes not unmapped (a backend that keeps its pages): they must be zero now.
  const std::size_t seen = w.seen_by_os + w.seen_by_interposer;
  std::size_t kept = 0;
  std::size_t kept_nonzero = 0;
  bool kept_readable = true;
  if (seen < size_) {
    kept = size_ - seen;
    std::size_t nz = 0;
    kept_readable = inspect(w, w.lo, w.hi, nz);
    kept_nonzero = nz;
  }
  if (w.mem_fd >= 0) close(w.mem_fd);
  w.mem_fd = -1;
  std::string how;
  if (w.seen_by_os != 0) how += std::to_string(w.seen_by_os) + " B seen by the lib/os unmap hook";
  if (w.seen_by_interposer != 0) {
    how += (how.empty() ? "" : ", ") + std::to_string(w.seen_by_interposer) + " B by the munmap interposer";
  }
  if (kept != 0) how += (how.empty() ? "" : ", ") + std::to_string(kept) + " B still mapped after release";
  if (w.unreadable != 0 || (kept != 0 && !kept_readable)) {
    return result::fail("could not inspect " + std::to_string(w.unreadable + (kept_readable ? 0 : kept)) +
                        " B of the secret's memory when it was released (" + how + ")");
  }
  if (w.nonzero + kept_nonzero != 0) {
    return result::fail(std::to_string(w.nonzero + kept_nonzero) + " of " + std::to_string(size_) +
                        " B were NOT zero when released (" + how + ")");
  }
  return result::pass("all " + std::to_string(size_) + " B zero when released (" + how + ")");
}

result check_wiping(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::wiped_on_release)) return *no;
  std::vector<std::pair<std::string, result>> parts;
  auto factory = make_factory(backend);
  for (const std::size_t size : secret_sizes()) {
    auto secret = factory.create_random(size);
    const std::byte* data = address_of(secret);
    wipe_watch watch(data, size);
    std::string close_error;
    try {
      secret.close();
    } catch (const std::exception& e) {
      close_error = e.what();
    }
    result r = watch.finish();
    if (!close_error.empty()) r = result::fail("close() failed: " + close_error);
    parts.emplace_back(size_label(size), std::move(r));
  }
  return combine(parts);
}

}  // namespace securememory::proof
