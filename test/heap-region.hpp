// Test support for test backends, header-only so that programs linking the
// shared library (which cannot link test/support.cpp) use it too.
#pragma once

#include <securememory/backend.hpp>

#include <cstddef>
#include <cstring>
#include <new>

namespace test {

/// `size` bytes of ordinary heap memory as a region (nothing locked or
/// protected), as test backends hand out; give it back with
/// ::operator delete(r.base). Throws std::bad_alloc.
inline securememory::Region heap_region(std::size_t size) {
  securememory::Region r;
  r.base = ::operator new(size);
  r.data = static_cast<std::byte*>(r.base);
  r.size = size;
  r.mapped = size;
  return r;
}

/// Gives back a heap_region(), wiped first, and empties `r`.
inline void release_heap_region(securememory::Region& r) noexcept {
  std::memset(r.base, 0, r.size);
  ::operator delete(r.base);
  r = securememory::Region{};
}

}  // namespace test
