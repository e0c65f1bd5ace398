// Allocation failure: every allocation the library makes on the way through
// a public call is made to fail, one at a time (this program replaces the
// global operator new and can make the Nth allocation on this thread fail).
// The call then throws securememory::error(out_of_memory) and holds
// nothing, or succeeds; a std::bad_alloc never escapes, and an exception of
// the caller's own (thrown by a callback) passes through unchanged.
// GCC sees this file's operator delete (free) inlined next to library
// operator new calls and warns; both sides are this file's malloc/free.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include "support.hpp"

#include <cstdlib>
#include <new>

namespace {

// -1: off; n >= 0: the allocation after n more on this thread fails.
constinit thread_local long fail_in = -1;
constinit thread_local long failed = 0;

bool should_fail() noexcept {
  if (fail_in < 0) return false;
  if (fail_in-- != 0) return false;
  ++failed;
  return true;
}

void* allocate(std::size_t n, std::size_t align) noexcept {
  if (should_fail()) return nullptr;
  if (n == 0) n = 1;
  if (align <= alignof(std::max_align_t)) return std::malloc(n);
  return std::aligned_alloc(align, (n + align - 1) / align * align);
}

}  // namespace

// NOLINTBEGIN(misc-new-delete-overloads, cert-dcl54-cpp): the whole family is replaced below
void* operator new(std::size_t n) {
  if (void* p = allocate(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = allocate(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = allocate(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = allocate(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
// NOLINTEND(misc-new-delete-overloads, cert-dcl54-cpp)

namespace {

std::string any_backend() { return GENERATE(from_range(securememory::backend_names())); }

enum class outcome { succeeded, out_of_memory, bad_alloc, other };

outcome run(const std::function<void()>& f) {
  try {
    f();
    return outcome::succeeded;
  } catch (const securememory::error& e) {
    return e.code() == securememory::errc::out_of_memory ? outcome::out_of_memory : outcome::other;
  } catch (const std::bad_alloc&) {
    return outcome::bad_alloc;
  }
}

// Runs f with the nth allocation failing, for n = 0, 1, ... until f makes
// no more than n allocations. Returns the outcomes seen.
std::vector<outcome> each_allocation_failing(const std::function<void()>& f) {
  std::vector<outcome> seen;
  for (long n = 0; n < 200; ++n) {
    failed = 0;
    fail_in = n;
    const outcome o = run(f);
    fail_in = -1;
    if (failed == 0) break;  // f made fewer than n + 1 allocations: all of them were tried
    seen.push_back(o);
  }
  return seen;
}

}  // namespace

SM_TEST("a failed allocation in create, with_bytes or close is out_of_memory, never bad_alloc, and holds nothing", "[alloc]") {
  const auto name = any_backend();
  CAPTURE(name);
  const auto cache = GENERATE(std::size_t{0}, std::size_t{1} << 20U);  // arenas made and unmapped each time, or recycled
  CAPTURE(cache);
  const test::page_cache_limit limit(cache);
  auto factory = securememory::make_factory(name);
  (void)factory.create_random(32);  // the backend's one-time set-up, outside the count
  const auto in_use = securememory::metrics().in_use;
  const auto creates = each_allocation_failing([&] { (void)factory.create_random(32); });
  for (const auto o : creates) CHECK((o == outcome::succeeded || o == outcome::out_of_memory));
  CHECK(securememory::metrics().in_use == in_use);
  auto secret = factory.create_random(32);
  const auto reads = each_allocation_failing([&] { secret.with_bytes([](std::span<const std::byte>) {}); });
  for (const auto o : reads) CHECK((o == outcome::succeeded || o == outcome::out_of_memory));
  const auto closes = each_allocation_failing([&] {
    auto s = factory.create_random(32);
    s.close();
  });
  for (const auto o : closes) CHECK((o == outcome::succeeded || o == outcome::out_of_memory));
  CHECK(securememory::metrics().in_use == in_use + 1);
  UNSCOPED_INFO(creates.size() << " allocations in create_random, " << reads.size() << " in with_bytes, "
                               << closes.size() << " in create + close");
}

SM_TEST("a failed allocation in make_factory or the registry is out_of_memory, never bad_alloc", "[alloc]") {
  const auto name = any_backend();
  CAPTURE(name);
  const auto made = each_allocation_failing([&] { (void)securememory::make_factory(name); });
  for (const auto o : made) CHECK((o == outcome::succeeded || o == outcome::out_of_memory));
}

SM_TEST("a bad_alloc thrown by the caller's own callback passes through unchanged", "[alloc]") {
  auto factory = securememory::make_factory(any_backend());
  auto secret = factory.create_random(16);
  CHECK_THROWS_AS(secret.with_bytes([](std::span<const std::byte>) { throw std::bad_alloc(); }), std::bad_alloc);
  CHECK_THROWS_AS(factory.create_with(16, [](std::span<std::byte>) { throw std::bad_alloc(); }), std::bad_alloc);
}
