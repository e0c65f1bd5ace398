// securememory: the "secretmem" backend (memfd_secret(2), Linux 5.14+).
//
// Secrets live in pages that the kernel removed from its direct map: root
// cannot read them through /proc/PID/mem or ptrace, they are in no core
// dump, and most kernel-side leaks cannot reach them.
//
// Memory layout (P = page size). Secrets are carved from arenas; an arena is
// one memfd_secret file, sized once (the kernel refuses a second ftruncate),
// mapped once MAP_SHARED, then its descriptor is closed (the mapping keeps
// the file alive):
//
//   arena k: one mapping of A_k pages (kernel flags: locked, don't-dump;
//            ours: MADV_DONTFORK)
//   |<- slot: secret 1 ->|<- free ->|<---- slot: secret 2 (2 pages) ---->|...
//   | bytes | zero pad   |  zeros   | bytes ...                | zero pad |
//   ^ data (page-aligned)            ^ data
//
//   idle and free slots: PROT_NONE   with_bytes: PROT_READ (that slot only)
//   fill / wipe:         PROT_READ|PROT_WRITE (that slot only)
//
// Arena sizes: the first is 4 pages, each next one as large as all live
// arenas together (doubling the capacity), at most 1024 pages (4 MiB), at
// least the pages of the secret that needs it. When RLIMIT_MEMLOCK does not
// allow the size, the arena is halved down to the secret's own pages.
//
// Cost for N secrets of n bytes each: ceil(n / P) pages per secret (region
// locked = those pages); 0 descriptors held (one is open for a moment while
// an arena is made); one mapping (VMA) per arena while all are idle, plus up
// to 2 while a secret is open (mprotect splits its slot off; it merges back
// when closed again). For N one-page secrets: 1 arena up to 4,
// ceil(log2(N / 4)) + 1 up to 2048, then 10 + ceil((N - 2048) / 1024)
// (10,000 secrets: 18 arenas, measured). RLIMIT_MEMLOCK is charged for whole
// arenas, free slots included (after a run of creations at most one arena
// beyond what the secrets use; more when closes leave holes). An arena is
// unmapped as soon as its last secret is closed.
#pragma once

#include <securememory/backend.hpp>

#include <memory>

namespace securememory::detail {

/// Makes the secretmem backend (one shared instance). Probes memfd_secret
/// once: when the kernel refuses it (ENOSYS, EINVAL, EPERM, EOPNOTSUPP) it
/// throws error(backend_unavailable) naming the reason and the kernel
/// requirement, now and on every later call. Transient failures (EMFILE,
/// ENOMEM) are reported the same way but probed again next time.
std::shared_ptr<backend> make_secretmem();

/// Forgets the probe result so the next make_secretmem() probes again.
/// For tests only (they make the probe fail through the lib/os/ hook).
void forget_secretmem_probe() noexcept;

}  // namespace securememory::detail
