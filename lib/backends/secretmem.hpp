// securememory: the "secretmem" backend (memfd_secret(2), Linux 5.14+).
//
// Secrets live in pages that the kernel removed from its direct map: root
// cannot read them through /proc/PID/mem or ptrace, they are in no core
// dump, and most kernel-side leaks cannot reach them.
//
// Memory layout (P = page size). Secrets are carved from arenas; an arena is
// one memfd_secret file, sized once (the kernel refuses a second ftruncate),
// mapped once MAP_SHARED, then its descriptor is closed (the mapping keeps
// the file alive). Each slot is a mapping (VMA) of its own: the page after
// it is a guard (anonymous, PROT_NONE, MAP_FIXED over the arena's page, no
// memory), unless the slot ends its arena:
//
//   arena k: A_k pages of address space (file mappings: kernel flags
//            locked, don't-dump; ours: MADV_DONTFORK)
//   |<- slot 1 ->| G |<---- slot 2 (2 pages) ---->| G |<- free ... ->|
//   | bytes|zero |   | bytes ...          | zero  |   |   zeros      |
//   ^ data            ^ data
//   G = guard page: a read or write past a slot faults there
//
//   idle, free and cached slots: PROT_NONE   with_bytes: PROT_READ (that slot)
//   fill / wipe: PROT_READ|PROT_WRITE (that slot only)
//
// Opening a slot changes the protection of exactly one whole VMA: no split,
// no merge (that cost about 2 us per with_bytes while slots shared their
// arena's mapping). A slot goes to the first free segment of exactly its
// pages, else the first longer one (its next page becomes the guard).
// Guards stay for the arena's life; freed slots never coalesce.
//
// Arena sizes: the first is 4 pages, each next one as large as all live
// arenas together (doubling the capacity), at most 1024 pages (4 MiB), at
// least the pages of the secret that needs it. When RLIMIT_MEMLOCK does not
// allow the size, the arena is halved down to the secret's own pages; when
// even those are refused, every page cache is emptied and the secret tried
// once more before errc::memlock_limit.
//
// Closed secrets' slots go to the page cache (lib/page_cache.hpp; bound
// SECUREMEMORY_PAGE_CACHE, default 1 MiB, 0 disables): wiped, PROT_NONE,
// still in their arena (still locked), counted in metrics().cached_bytes. A
// new secret of the same page count takes one with a single mprotect. An
// arena is unmapped as soon as it holds neither a live nor a cached slot.
//
// Cost for N secrets of n bytes each: ceil(n / P) pages per secret (region
// locked = those pages); 0 descriptors held (one is open for a moment while
// an arena is made); 2 mappings per secret (its slot and its guard page) plus
// at most one free remainder per arena: vm.max_map_count (default 65530)
// allows about 32,000 secretmem secrets per process, fewer beside other
// mappings. For N one-page secrets, each takes 2 pages of an arena (slot and
// guard): 10,000 secrets: 10,001 secretmem mappings, 20,002 in all
// (measured). RLIMIT_MEMLOCK is charged for the slots and free pages of the
// arenas (not the guards), cached slots included (after a run of creations
// at most one arena beyond what the secrets use; more when closes leave
// holes).
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
