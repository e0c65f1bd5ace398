// securememory: the page cache (recycling closed secrets' pages).
//
// Mapping, locking and unmapping pages costs several system calls per
// secret. Backends that own whole pages (protectedmemory, secretmem)
// therefore keep the pages of closed secrets in a bounded cache instead of
// unmapping them: each cached page has been wiped (all zeros), is left
// read-write (it holds nothing to protect, and making it no-access would
// cost a TLB shootdown), and is still locked and dump-excluded
// (protectedmemory: and wiped-on-fork; secretmem: not mapped in a child at
// all). A new secret of the same page count takes such pages with no
// system call instead of mmap + mlock + madvise (secretmem: instead of a
// new arena or slot). A
// cached secretmem slot keeps its memfd_secret file alive, which blocks
// hibernation: set the bound to 0 before hibernating.
//
// The bound is process-wide, in bytes, shared by every cache:
//   - environment variable SECUREMEMORY_PAGE_CACHE, read once on first use:
//     a byte count with an optional K, M or G suffix (powers of 1024);
//     "0" disables the cache;
//   - set_page_cache_limit(bytes) at run time (overrides the variable).
// Default: 1 MiB. Cached bytes are reported by metrics().cached_bytes (they
// are NOT part of locked_bytes, which counts live secrets only). When the
// kernel refuses to lock pages for a new secret, every cache is emptied and
// the lock is tried once more before the allocation fails.
#pragma once

#include <securememory/config.hpp>

#include <cstddef>

namespace securememory {

/// The page cache's bound in bytes now in force (0: disabled). Thread-safe.
SECUREMEMORY_API std::size_t page_cache_limit() noexcept;

/// Sets the page cache's bound in bytes (0 disables it) and returns the
/// previous one. Pages above the new bound are unlocked and unmapped before
/// it returns. Thread-safe. Never throws.
SECUREMEMORY_API std::size_t set_page_cache_limit(std::size_t bytes) noexcept;

}  // namespace securememory
