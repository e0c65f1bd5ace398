// securememory: where sealed's two allocators get their memory from the
// kernel (lib/os/ through locked_pages.hpp): the plaintext scratch's
// reservation and locks, and the slot arena's blocks (huge pages past the
// first 8 MiB of a size class). The allocators themselves take these as
// injected sources (scratch.hpp, slots.hpp) and are unit-tested on plain
// memory.
#pragma once

#include "backends/sealed/scratch.hpp"
#include "backends/sealed/slots.hpp"

namespace securememory::detail::sealed_parts {

/// The process's plaintext scratch (made on first use, never destroyed).
/// Throws std::bad_alloc.
scratch& the_scratch();
/// The process's ciphertext slot arena (made on first use, never
/// destroyed). Throws std::bad_alloc.
slot_arena& the_slots();

}  // namespace securememory::detail::sealed_parts
