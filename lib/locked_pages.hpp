// securememory internal: the one path that maps and locks memory for secrets.
//
// Every backend gets its locked memory through these functions, so that the
// rules hold everywhere and are written once:
//   - a refused lock empties every page cache and is tried once more before
//     it fails (the caches hold locked pages that count against the limit);
//   - a failure names its real cause: RLIMIT_MEMLOCK (errc::memlock_limit,
//     with the limit and how to raise it), or vm.max_map_count
//     (errc::out_of_memory, with the process's mapping count and what each
//     secret of the backend costs), or plain memory shortage;
//   - a request that cannot be locked fails before any of its memory is
//     touched (require_lockable());
//   - every step that fails undoes the ones before it: a failure holds
//     nothing.
// All system calls go through lib/os/.
#pragma once

#include <securememory/backend.hpp>

#include <cstddef>
#include <string>
#include <sys/mman.h>

namespace securememory::detail {

/// Who asks for memory, for the messages of the errors below.
struct memory_user {
  const char* what;                 ///< "a secret", "plaintext scratch", ...
  const char* backend;              ///< "protectedmemory", ...
  std::size_t mappings_per_secret;  ///< what one secret costs in mappings (vm.max_map_count)
};

/// How a forked child must see the pages.
enum class on_fork : unsigned char {
  wipe,  ///< private anonymous memory: the platform's rule (os::fork_hiding(): zero-filled, not mapped, or none)
  drop,  ///< not mapped at all (MADV_DONTFORK): shared mappings (secretmem, Linux only)
};

/// Locks [addr, addr + length). When the kernel refuses, every page cache is
/// emptied and the lock tried once more; then it throws memlock_limit or
/// out_of_memory naming the cause (see the file comment). Nothing is undone:
/// the caller still owns the mapping.
void lock_pages(void* addr, std::size_t length, const memory_user& who);

/// Throws error(memlock_limit) when `length` more bytes cannot be locked
/// right now (after emptying the page caches), without touching any memory:
/// the probe is a reservation locked with MLOCK_ONFAULT, which the kernel
/// charges against RLIMIT_MEMLOCK without faulting a page in. For backends
/// whose allocator writes the memory before it can be locked (libsodium's
/// sodium_malloc fills it). Costs three system calls. Where the platform
/// has no mlock2 (os::can_lock_on_fault()) it cannot tell and returns.
void require_lockable(std::size_t length, const memory_user& who);

/// Excludes the pages from core dumps and applies the fork rule, each where
/// the platform provides it (os::can_exclude_from_core_dumps(),
/// os::fork_hiding()); throws error(protection_failed) naming the call.
/// Undoes nothing.
void advise_secret_pages(void* addr, std::size_t length, on_fork fork, const memory_user& who);

/// A fresh private anonymous mapping of `length` bytes (whole pages),
/// read-write, locked (lock_pages), and through advise_secret_pages() (on
/// Linux: excluded from core dumps and wiped in a forked child). On failure nothing is mapped and the error says why.
[[nodiscard]] void* map_locked(std::size_t length, const memory_user& who);

/// What unmap_locked() could not do: each step's errno, or 0.
struct unmap_errors {
  int unlock = 0;
  int unmap = 0;
};

/// munlock + munmap of a map_locked() mapping (not wiped here); goes on past
/// a failed step.
unmap_errors unmap_locked(void* addr, std::size_t length) noexcept;

/// Throws the error for a failed mmap (or another call that maps memory)
/// with errno `err`: out_of_memory, naming vm.max_map_count when the
/// process is at it.
[[noreturn]] void throw_map_failed(int err, const char* call, std::size_t length, const memory_user& who);

/// Text for an error(memlock_limit): names RLIMIT_MEMLOCK and how to raise
/// it, and that the page caches were already emptied.
std::string memlock_hint();

// ---- page arithmetic and protection (the page-based backends) ----------------

/// Rounds size up to whole pages, after adding `extra` bytes. Throws
/// error(invalid_size) for size 0 or when the arithmetic would overflow.
std::size_t round_to_pages(std::size_t size, std::size_t extra = 0);

/// The mprotect flags for an access level (shared by the page-based backends).
constexpr int page_protection(access a) noexcept {
  switch (a) {
    case access::none: return PROT_NONE;
    case access::read: return PROT_READ;
    case access::read_write: return PROT_READ | PROT_WRITE;
  }
  return PROT_NONE;
}

/// mprotect(addr, length, page_protection(a)) through lib/os/, recording
/// it in r.current; throws error(protection_failed) naming mprotect and
/// its errno.
void protect_pages(void* addr, std::size_t length, region& r, access a);

}  // namespace securememory::detail
