// securememory: the "protectedmemory" backend.
//
// Memory layout of one secret (P = page size, n = secret size):
//
//   base                                         base + round_up(n, P)
//   |<------------- mmap'd, mlock'ed, MADV_DONTDUMP, MADV_WIPEONFORK ------------->|
//   | secret bytes (n) | zero padding up to the page end                          |
//   ^ data == base
//
//   idle:          PROT_NONE        (any access faults)
//   with_bytes:    PROT_READ        (writes fault)
//   fill / wipe:   PROT_READ|WRITE  (only inside the library)
//
// Cost per secret: ceil(n / P) pages mapped, the same number locked
// (counted against RLIMIT_MEMLOCK), one VMA (adjacent VMAs with equal flags
// may be merged by the kernel). No guard pages: an overflow past the page
// end hits whatever mapping follows. Use "memguard" for guard pages.
//
// Closed secrets' pages go to the page cache (lib/page_cache.hpp) when it
// has room: wiped, PROT_NONE, still locked; a new secret of the same page
// count reuses them (create + close: 4 mprotect instead of mmap, mlock,
// 2 madvise, 2 mprotect, munlock, munmap).
#pragma once

#include <securememory/backend.hpp>

#include <memory>

namespace securememory::detail {

/// Makes the protectedmemory backend (one shared, stateless instance).
std::shared_ptr<backend> make_protectedmemory();

}  // namespace securememory::detail
