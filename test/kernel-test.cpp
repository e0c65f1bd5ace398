// Guarantees checked on the real kernel, in forked children where a crash
// is the expected outcome: no access outside with_bytes, no write inside,
// pages locked and excluded from dumps (/proc/self/smaps), fork safety.
#include "support.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <sys/mman.h>

using securememory::errc;

namespace {
std::string any_backend() { return GENERATE(from_range(securememory::backend_names())); }
}  // namespace

SM_TEST("reading a secret's memory outside with_bytes dies with SIGSEGV", "[kernel][death]") {
  const auto name = any_backend();
  CAPTURE(name);
  auto secret = securememory::make_factory(name).create_random(32);
  const auto* addr = test::address_of(secret);
  if (test::plaintext_in_scratch(name)) {
    // Sealed at rest: the only plaintext was in the scratch, which stays
    // mapped and locked but holds nothing but zeros after the access.
    const auto m = test::find_mapping(addr);
    REQUIRE(m);
    CHECK(m->has_flag("lo"));
    CHECK(m->has_flag("dd") == test::dump_exclusion_here());
    CHECK(test::all_zero_at(addr, 32));
    return;
  }
  const auto r = test::run_in_child([addr] {
    volatile std::byte b = *static_cast<const volatile std::byte*>(addr);
    (void)b;
    return 0;
  });
  INFO(r.describe());
  CHECK(r.signaled);
  CHECK(r.signal == SIGSEGV);
}

SM_TEST("reading inside with_bytes works in a child (control for the death tests)", "[kernel][death]") {
  // The child's copy of the memory is wiped at fork (MADV_WIPEONFORK) and
  // with_bytes refuses a parent's secret; so the child makes its own.
  const auto name = any_backend();
  CAPTURE(name);
  const auto r = test::run_in_child([&name] {
    auto own = securememory::make_factory(name).create_random(32);
    return own.with_bytes([](std::span<const std::byte> b) {
      volatile std::byte x = b[31];
      (void)x;
      return 0;
    });
  });
  INFO(r.describe());
  CHECK(r.exited);
  CHECK(r.exit_code == 0);
}

SM_TEST("writing inside with_bytes dies with SIGSEGV", "[kernel][death]") {
  const auto name = any_backend();
  CAPTURE(name);
  if (test::plaintext_in_scratch(name)) {
    // The callback sees a private opened copy: a write lands in the scratch
    // only and never reaches the stored (sealed) secret.
    const auto expected = test::pattern(32, 5);
    auto source = expected;
    auto secret = securememory::make_factory(name).create(source);
    secret.with_bytes([](std::span<const std::byte> b) {
      auto* first = const_cast<volatile std::byte*>(static_cast<const volatile std::byte*>(b.data()));
      *first = std::byte{static_cast<unsigned char>(std::to_integer<unsigned>(*first) ^ 1U)};
    });
    CHECK(secret.with_bytes([&](std::span<const std::byte> b) { return std::equal(b.begin(), b.end(), expected.begin()); }));
    return;
  }
  const auto r = test::run_in_child([&name] {
    auto secret = securememory::make_factory(name).create_random(32);
    secret.with_bytes([](std::span<const std::byte> b) {
      *const_cast<volatile std::byte*>(static_cast<const volatile std::byte*>(b.data())) = std::byte{1};
    });
    return 0;
  });
  INFO(r.describe());
  CHECK(r.signaled);
  CHECK(r.signal == SIGSEGV);
}

SM_TEST("smaps: the pages are Locked, don't-dump and no-access while idle", "[kernel][smaps]") {
  const auto name = any_backend();
  CAPTURE(name);
  auto secret = securememory::make_factory(name).create_random(5000);
  const auto* addr = test::address_of(secret);
  if (test::plaintext_in_scratch(name)) {
    // Sealed: while idle no plaintext exists; during the access it is in a
    // locked, don't-dump, wipe-on-fork scratch mapping, unmapped afterwards
    // (secrets larger than a page get their own).
    secret.with_bytes([&](std::span<const std::byte> b) {
      const auto open = test::find_mapping(b.data());
      REQUIRE(open);
      CHECK(open->has_flag("lo"));
      CHECK(open->has_flag("dd") == test::dump_exclusion_here());
      CHECK(open->has_flag("wf") == test::wipe_on_fork_here());
      CHECK(open->locked_kb * 1024 >= 8192);
      CHECK(open->locked_kb * 1024 == (open->end - open->start));
    });
    const auto after = test::find_mapping(addr);
    CHECK((!after || !after->has_flag("lo")));
    return;
  }
  const auto idle = test::find_mapping(addr);
  REQUIRE(idle);
  CHECK(idle->perms.substr(0, 3) == "---");
  // MADV_DONTDUMP where lib/os/ has it (libsodium applies it to memguard's
  // pages by itself when it was built for Linux).
  if (name != "memguard") CHECK(idle->has_flag("dd") == test::dump_exclusion_here());
  CHECK(idle->has_flag("lo"));  // mlock'ed
  CHECK(idle->locked_kb * 1024 >= 8192);
  // Every page backend gives a secret a mapping of its own (secretmem: its
  // slot of an arena, between guard pages), locked whole.
  CHECK(idle->locked_kb * 1024 == (idle->end - idle->start));
  secret.with_bytes([&](std::span<const std::byte> b) {
    const auto open = test::find_mapping(b.data());
    REQUIRE(open);
    CHECK(open->perms.substr(0, 3) == "r--");
    CHECK(open->locked_kb * 1024 >= 8192);
  });
  const auto cached_before = securememory::metrics().cached_bytes;
  secret.close();
  const auto after = test::find_mapping(addr);
  if (securememory::metrics().cached_bytes > cached_before) {
    // Kept by the page cache: still locked and don't-dump, wiped (the
    // secret's own page is read through /proc/self/mem), and read-write: it
    // holds nothing to protect.
    REQUIRE(after);
    CHECK(after->perms.substr(0, 3) == "rw-");
    CHECK(after->has_flag("lo"));
    CHECK(after->has_flag("dd") == test::dump_exclusion_here());
    if (name == "secretmem") {
      // Shared mappings cannot be wipe-on-fork: not mapped in a child at
      // all. /proc/self/mem cannot read secretmem, so look from outside the
      // library (the cached slot is readable).
      CHECK(after->has_flag("dc"));  // MADV_DONTFORK
      const auto* slot = addr;
      CHECK(std::all_of(slot, slot + (after->end - after->start), [](std::byte b) { return b == std::byte{0}; }));
    } else {
      CHECK(after->has_flag("wf") == test::wipe_on_fork_here());  // MADV_WIPEONFORK
      CHECK(test::read_process_memory(addr, 5000) == std::vector<std::byte>(5000));
    }
  } else if (name == "secretmem") {
    // An arena backend keeps its arena while other secrets (here, sealed's
    // key) live in it, with the slot no-access and free.
    CHECK((!after || after->perms.substr(0, 3) == "---"));
  } else {
    CHECK((!after || !after->has_flag(test::secret_page_flag())));  // our mapping is gone
  }
}

SM_TEST("after fork, the child cannot read the parent's secret and can close it", "[kernel][fork]") {
  const auto name = any_backend();
  CAPTURE(name);
  auto factory = securememory::make_factory(name);
  // Without hidden_from_fork_children (a platform with no fork rule: the
  // posix_only build) the child has a copy of the bytes: only the access
  // and the close are checked then.
  const bool hidden = factory.guarantees().hidden_from_fork_children;
  auto secret = factory.create_random(64);
  const auto* addr = test::address_of(secret);
  const auto r = test::run_in_child([&secret, addr, hidden] {
    if (test::error_of([&] { secret.with_bytes([](std::span<const std::byte>) {}); }) != errc::closed) return 2;
    if (!hidden) {
      secret.close();
      return secret.is_closed() ? 0 : 6;
    }
    // The raw bytes are zero in the child (MADV_WIPEONFORK), or the pages
    // are not mapped at all (MADV_DONTFORK).
    auto* data = const_cast<std::byte*>(addr);
    auto* page = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(data) & ~std::uintptr_t{4095});
    if (mprotect(page, 4096, PROT_READ) == 0) {
      for (int i = 0; i < 64; ++i) {
        if (data[i] != std::byte{0}) return 4;
      }
      if (mprotect(page, 4096, PROT_NONE) != 0) return 5;
    } else if (errno != ENOMEM) {
      return 3;
    }
    secret.close();
    return secret.is_closed() ? 0 : 6;
  });
  INFO(r.describe());
  CHECK(r.exited);
  CHECK(r.exit_code == 0);
  // The parent's secret is untouched.
  CHECK(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 64);
}
