// Test support (see support.hpp).
#include "support.hpp"

#include "heap-region.hpp"

#include "proof/proof.hpp"
#include <sodium.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <unistd.h>

namespace test {

std::string child_result::describe() const {
  if (exited) return "exited with " + std::to_string(exit_code);
  if (signaled) return std::string("killed by signal ") + std::to_string(signal) + " (" + strsignal(signal) + ")";
  return "unknown status";
}

child_result run_in_child(const std::function<int()>& fn) {
  const auto c = securememory::proof::run_child(fn, /*allow_core=*/false, /*timeout_seconds=*/120);
  if (c.timed_out) FAIL("the child hung and was killed");
  child_result r;
  r.exited = c.exited;
  r.exit_code = c.exit_code;
  r.signaled = c.signaled;
  r.signal = c.signal;
  return r;
}

bool drop_cap_ipc_lock() { return securememory::proof::drop_cap_ipc_lock(); }

fault_injector::fault_injector(securememory::detail::os::call target, int err, int skip, int times, int stride)
    : target_(target), err_(err), skip_(skip), times_(times), stride_(stride) {
  securememory::detail::os::set_fault_hook(&fault_injector::hook, this);
}

fault_injector::~fault_injector() { securememory::detail::os::set_fault_hook(nullptr, nullptr); }

int fault_injector::hook(securememory::detail::os::call c, void* context) noexcept {
  auto* self = static_cast<fault_injector*>(context);
  if (c < securememory::detail::os::call::count_) self->counts_[static_cast<int>(c)].fetch_add(1);
  if (c != self->target_) return 0;
  const int n = self->seen_.fetch_add(1);
  if (n < self->skip_ || (n - self->skip_) % self->stride_ != 0 || (n - self->skip_) / self->stride_ >= self->times_) {
    return 0;
  }
  self->injected_.fetch_add(1);
  return self->err_;
}

std::optional<mapping_info> find_mapping(const void* addr) {
  const auto target = reinterpret_cast<std::uintptr_t>(addr);
  for (auto& m : securememory::proof::read_smaps()) {
    if (m.start <= target && target < m.end) return std::move(m);
  }
  return std::nullopt;
}

securememory::region heap_backend::allocate(std::size_t size) {
  ++allocations;
  return heap_region(size);
}

std::optional<securememory::ViolationKind> heap_backend::protect(securememory::region& /*r*/, securememory::access a) {
  last_access = a;
  ++protects;
  return std::nullopt;
}

void heap_backend::release(securememory::region& r) {
  sodium_memzero(r.base, r.size);
  ::operator delete(r.base);
  ++releases;
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  unsigned x = seed * 2654435761U + 1U;
  for (auto& b : v) {
    x = x * 1103515245U + 12345U;
    b = static_cast<std::byte>(((x >> 16U) & 0xFFU) | 1U);  // never zero
  }
  return v;
}

bool plaintext_in_scratch(std::string_view backend) {
  return securememory::make_factory(backend).guarantees().encrypted_at_rest;
}

bool all_zero_at(const std::byte* p, std::size_t n) {
  const auto* v = static_cast<const volatile std::byte*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    if (v[i] != std::byte{0}) return false;
  }
  return true;
}

const std::byte* address_of(const securememory::Secret& s) {
  const std::byte* at = nullptr;
  s.with_bytes([&](std::span<const std::byte> b) { at = b.data(); });  // the address, not the bytes: it leaves the call
  return at;
}

bool flip_byte_before(const std::byte* data, int protection, unsigned char mask) noexcept {
  auto* target = const_cast<std::byte*>(data - 1);
  const auto page_size = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  auto* page = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(target) & ~(page_size - 1));
  if (mprotect(page, page_size, PROT_READ | PROT_WRITE) != 0) return false;
  *target ^= std::byte{mask};
  return mprotect(page, page_size, protection) == 0;
}

void corrupt_canary(const securememory::Secret& s, unsigned char mask) {
  REQUIRE(flip_byte_before(address_of(s), PROT_NONE, mask));
}

std::vector<std::byte> read_process_memory(const void* addr, std::size_t n) {
  std::vector<std::byte> out(n);
  std::FILE* mem = std::fopen("/proc/self/mem", "rb");
  REQUIRE(mem != nullptr);
  const bool ok = fseeko(mem, static_cast<off_t>(reinterpret_cast<std::uintptr_t>(addr)), SEEK_SET) == 0 &&
                  std::fread(out.data(), 1, n, mem) == n;
  std::fclose(mem);
  REQUIRE(ok);
  return out;
}

std::optional<securememory::errc> error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const securememory::error& e) {
    return e.code_value();
  }
  return std::nullopt;
}

std::optional<caught_error> caught(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const securememory::error& e) {
    return caught_error{e.code_value(), e.sys_errno(), e.what()};
  }
  return std::nullopt;
}

}  // namespace test
