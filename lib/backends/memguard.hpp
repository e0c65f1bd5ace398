// securememory: the "memguard" backend (libsodium guarded allocations).
//
// Memory layout of one secret of n bytes (P = page size, C = 16-byte canary;
// U = round_up(n + C + 16, P) is what sodium_malloc calls the unprotected
// region):
//
//   | base page | guard page |<------------------ U ------------------>| guard page |
//   | sodium's  | PROT_NONE  | pad | sodium canary | our canary | data  | PROT_NONE  |
//   | size, RO  | always     |     |   16 bytes    |  C bytes   | n B   | always     |
//                            ^ mlock'ed (by us, checked), MADV_DONTDUMP,  ^ data ends
//                              MADV_WIPEONFORK; idle PROT_NONE,            exactly at
//                              with_bytes PROT_READ                        the guard
//
// - Data is right-aligned: one byte past the end faults at once (guard).
// - Our random canary sits directly in front of the data, so an underflow
//   hits it before libsodium's own canary; it is checked on every open, on
//   close and by Secret::verify().
// - Cost per secret: U/P + 3 pages mapped (4 or more mappings), U/P pages
//   locked (counted against RLIMIT_MEMLOCK).
#pragma once

#include <securememory/backend.hpp>

#include <memory>

namespace securememory::detail {

/// Makes the memguard backend (one shared instance per process).
/// Throws error(backend_unavailable) if libsodium cannot be initialised.
std::shared_ptr<backend> make_memguard();

}  // namespace securememory::detail
