// Bad input at every public entry point, on every available backend: sizes
// of 0, SIZE_MAX and around the page-rounding overflow; empty, very long,
// non-ASCII and NUL-carrying backend names; null makers, makers that return
// null or throw; empty reads; moved-from and default handles and readers;
// null and throwing callbacks; loggers that throw. Each gives the documented
// error or the documented no-op, holds nothing afterwards (metrics and the
// kernel's VmLck back to where they were) and crashes nothing.
#include "support.hpp"


#include <limits>
#include <mutex>
#include <stdexcept>

using securememory::errc;
using securememory::Secret;
using call = securememory::detail::os::call;

namespace {

constexpr std::size_t size_max = std::numeric_limits<std::size_t>::max();

std::vector<std::string> available_backends() {
  std::vector<std::string> out;
  for (const auto& name : securememory::backend_names()) {
    if (securememory::backend_available(name)) out.push_back(name);
  }
  return out;
}

std::string any_available_backend() { return GENERATE(from_range(available_backends())); }

// Locked memory of this process according to the kernel.
long vm_locked_kb() { return test::proc_status_kb("VmLck"); }

using test::heap_backend;

// A secret holding a known pattern, and that pattern.
struct known_secret {
  std::vector<std::byte> expected;
  Secret secret;
};
known_secret make_known(const std::string& backend, std::size_t size, unsigned seed) {
  known_secret k{test::pattern(size, seed), {}};
  auto source = k.expected;
  k.secret = securememory::make_factory(backend).create(source);
  return k;
}

bool all_zero(std::span<const std::byte> a) {
  return std::all_of(a.begin(), a.end(), [](std::byte b) { return b == std::byte{0}; });
}

}  // namespace

// ---- sizes ------------------------------------------------------------------

SM_TEST("bad sizes: 0 and overflowing roundings are invalid_size, huge ones invalid_size or out_of_memory; nothing held",
        "[bad-input][size]") {
  const auto name = any_available_backend();
  CAPTURE(name);
  auto factory = securememory::make_factory(name);
  const std::size_t page = securememory::detail::os::page_size();
  // A backend's one-time locked state (sealed's key and per-thread scratch)
  // is made by a first good secret, before the measurement.
  (void)factory.create_random(1);
  const auto before = securememory::metrics();
  const long locked_kb = vm_locked_kb();
  int refused = 0;
  // size + page - 1 overflows for every size above size_max - page + 1,
  // whatever a backend adds: invalid_size everywhere.
  for (const std::size_t size : {std::size_t{0}, size_max, size_max - 1, size_max - page / 2, size_max - page + 2}) {
    CAPTURE(size);
    CHECK(test::error_of([&] { (void)factory.create_random(size); }) == errc::invalid_size);
    ++refused;
  }
  // Just below, the rounding works for some backends and the kernel refuses
  // the mapping (these sizes exceed any address space; never a size in
  // between, whose mlock would page in real memory).
  for (const std::size_t size :
       {size_max - page + 1, size_max - page, size_max - 2 * page, size_max / 2 + 1, std::size_t{1} << 62U,
        std::size_t{1} << 56U}) {
    CAPTURE(size);
    const auto e = test::error_of([&] { (void)factory.create_random(size); });
    CHECK((e == errc::invalid_size || e == errc::out_of_memory));
    ++refused;
  }
  // An empty source, with and without a data pointer.
  std::vector<std::byte> empty;
  CHECK(test::error_of([&] { (void)factory.create(empty); }) == errc::invalid_size);
  std::array<std::byte, 4> four{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  CHECK(test::error_of([&] { (void)factory.create(std::span<std::byte>(four.data(), 0)); }) == errc::invalid_size);
  CHECK(four[0] == std::byte{1});  // untouched
  refused += 2;
  const auto after = securememory::metrics();
  CHECK(after.allocated == before.allocated);
  CHECK(after.failures == before.failures + static_cast<std::uint64_t>(refused));  // each refusal counted once
  CHECK(vm_locked_kb() == locked_kb);
  // The factory still works.
  CHECK(factory.create_random(1).size() == 1);
}

SM_TEST("sizes at page boundaries round-trip exactly", "[bad-input][size]") {
  const auto name = any_available_backend();
  auto factory = securememory::make_factory(name);
  const std::size_t page = securememory::detail::os::page_size();
  for (const std::size_t size : {std::size_t{1}, page - 1, page, page + 1, 2 * page - 1, 2 * page}) {
    CAPTURE(name, size);
    const auto expected = test::pattern(size, static_cast<unsigned>(size));
    auto source = expected;
    auto secret = factory.create(source);
    CHECK(all_zero(source));
    CHECK(secret.with_bytes([&](std::span<const std::byte> b) {
      return b.size() == size && std::equal(b.begin(), b.end(), expected.begin());
    }));
  }
}

// ---- backend names and the registry -------------------------------------------

TEST_CASE("bad backend names are unknown_backend, with a bounded message listing the known names",
          "[bad-input][registry]") {
  const std::string nul_name("protectedmemory\0x", 17);
  const std::vector<std::string> names{
      "",
      std::string(1U << 20U, 'x'),       // 1 MiB
      "pr\xc3\xb6tectedmemory",          // UTF-8
      "\xff\xfe\x80\xc0",                // not UTF-8 at all
      nul_name,                          // a known name, then NUL and more
      std::string("protectedmemory", 15) + std::string(1, '\0'),
      "ProtectedMemory",
      " protectedmemory",
      "protectedmemory ",
      "protected",
  };
  for (const auto& name : names) {
    CAPTURE(name.size());
    std::string what;
    try {
      (void)securememory::make_factory(name);
      FAIL("make_factory accepted a bad name");
    } catch (const securememory::error& e) {
      CHECK(e.code() == errc::unknown_backend);
      what = e.what();
    }
    CHECK(what.size() < 200 + 64 * securememory::backend_names().size());  // the caller's name is cut at 64 bytes
    CHECK(what.find("protectedmemory") != std::string::npos);                // the known names are listed
    CHECK_FALSE(securememory::backend_available(name));
  }
  // The same names through SECUREMEMORY_BACKEND (an empty value means unset).
  for (const auto& name : {std::string(5000, 'y'), std::string("\xff\xfe")}) {
    setenv("SECUREMEMORY_BACKEND", name.c_str(), 1);
    CHECK(test::error_of([] { (void)securememory::make_factory(); }) == errc::unknown_backend);
  }
  unsetenv("SECUREMEMORY_BACKEND");
}

TEST_CASE("register_backend: empty names and null makers are invalid_argument and change nothing",
          "[bad-input][registry]") {
  const auto before = securememory::backend_names();
  CHECK(test::error_of([] { securememory::register_backend("", [] { return std::make_shared<heap_backend>(); }); }) ==
        errc::invalid_argument);
  CHECK(test::error_of([] { securememory::register_backend("bad-input-null", nullptr); }) == errc::invalid_argument);
  CHECK(test::error_of([] { securememory::register_backend("bad-input-null2", securememory::BackendMaker{}); }) ==
        errc::invalid_argument);
  CHECK(test::error_of([] { securememory::register_backend(std::string(), nullptr); }) == errc::invalid_argument);
  CHECK(securememory::backend_names() == before);
}

SM_TEST("a registry takes any non-empty name, byte for byte", "[bad-input][registry]") {
  securememory::registry reg;
  const std::string nul_name("a\0b", 3);
  const std::vector<std::string> names{std::string(100000, 'n'), "\xff\xfe", "\xe2\x9c\x93", nul_name, " "};
  for (const auto& name : names) reg.add(name, [] { return std::make_shared<heap_backend>(); });
  CHECK(reg.names().size() == names.size());
  for (const auto& name : names) {
    CHECK(reg.available(name));
    auto secret = reg.make_factory(name).create_random(8);
    CHECK(secret.size() == 8);
  }
  CHECK_FALSE(reg.available("a"));  // a prefix of "a\0b" is another name
  CHECK(test::error_of([&] { (void)reg.make_factory("a"); }) == errc::unknown_backend);
}

TEST_CASE("an empty registry knows nothing and says so", "[bad-input][registry]") {
  const securememory::registry reg;
  CHECK(reg.names().empty());
  CHECK_FALSE(reg.available("protectedmemory"));
  try {
    (void)reg.make_factory("protectedmemory");
    FAIL("no exception");
  } catch (const securememory::error& e) {
    CHECK(e.code() == errc::unknown_backend);
    CHECK(std::string(e.what()).find("(none)") != std::string::npos);
  }
}

TEST_CASE("makers that return null, throw, or call back into the registry", "[bad-input][registry]") {
  securememory::registry reg;
  reg.add("null", [] { return std::shared_ptr<securememory::backend>(); });
  reg.add("throws-error", []() -> std::shared_ptr<securememory::backend> {
    throw securememory::error(errc::backend_unavailable, "not on this host");
  });
  reg.add("throws-other", []() -> std::shared_ptr<securememory::backend> { throw std::runtime_error("maker bug"); });
  reg.add("reentrant", [&reg] {
    (void)reg.names();  // the registry's lock is not held while a maker runs
    (void)reg.available("null");
    return std::make_shared<heap_backend>();
  });
  // A null backend: unavailable, and make_factory says invalid_argument.
  CHECK_FALSE(reg.available("null"));
  CHECK(test::error_of([&] { (void)reg.make_factory("null"); }) == errc::invalid_argument);
  // A maker's securememory::error: unavailable, and passed through.
  CHECK_FALSE(reg.available("throws-error"));
  CHECK(test::error_of([&] { (void)reg.make_factory("throws-error"); }) == errc::backend_unavailable);
  // Any other exception is the maker's bug: it propagates from both.
  CHECK_THROWS_AS((void)reg.available("throws-other"), std::runtime_error);
  CHECK_THROWS_AS((void)reg.make_factory("throws-other"), std::runtime_error);
  // No deadlock when a maker consults the registry.
  CHECK(reg.available("reentrant"));
  CHECK(reg.make_factory("reentrant").backend() == "test-heap");
}

TEST_CASE("a SecretFactory without a backend is invalid_argument", "[bad-input]") {
  CHECK(test::error_of([] { (void)securememory::SecretFactory(nullptr); }) == errc::invalid_argument);
}

// ---- handles ----------------------------------------------------------------

SM_TEST("moved-from and default handles: closed for access, no-op for close, empty for queries",
        "[bad-input][move]") {
  const auto name = any_available_backend();
  auto factory = securememory::make_factory(name);
  Secret moved_from = factory.create_random(16);
  const Secret target = std::move(moved_from);
  for (Secret* s : {&moved_from, static_cast<Secret*>(nullptr)}) {
    Secret empty;
    Secret& h = s != nullptr ? *s : empty;
    CHECK(h.is_closed());
    CHECK(h.size() == 0);
    CHECK(h.backend().empty());
    CHECK(test::error_of([&] { h.with_bytes([](std::span<const std::byte>) {}); }) == errc::closed);
    CHECK(test::error_of([&] { (void)h.reader(); }) == errc::closed);
    h.close();  // no-op
    h.close();
    CHECK(h.is_closed());
  }
  CHECK(target.size() == 16);
  CHECK_FALSE(target.is_closed());
}

SM_TEST("self-move assignment leaves the secret as it was", "[bad-input][move]") {
  const auto name = any_available_backend();
  auto [expected, secret] = make_known(name, 24, 5);
  Secret& alias = secret;
  const auto in_use = securememory::metrics().in_use;
  secret = std::move(alias);
  CHECK_FALSE(secret.is_closed());
  CHECK(securememory::metrics().in_use == in_use);
  CHECK(secret.with_bytes([&](std::span<const std::byte> b) { return std::equal(b.begin(), b.end(), expected.begin(), expected.end()); }));
}

SM_TEST("moving a secret out of its own callback keeps the access valid and the secret open",
        "[bad-input][move]") {
  const auto name = any_available_backend();
  auto [expected, secret] = make_known(name, 32, 9);
  Secret taken;
  secret.with_bytes([&](std::span<const std::byte> b) {
    taken = std::move(secret);
    CHECK(std::equal(b.begin(), b.end(), expected.begin(), expected.end()));
  });
  CHECK(secret.is_closed());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  CHECK_FALSE(taken.is_closed());
  CHECK(taken.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 32);
}

// ---- readers ------------------------------------------------------------------

SM_TEST("reader: empty spans read nothing anywhere, oversized spans stop at the end", "[bad-input][reader]") {
  const auto name = any_available_backend();
  auto [expected, secret] = make_known(name, 100, 4);
  auto reader = secret.reader();
  std::array<std::byte, 1> one{};
  CHECK(reader.read({}) == 0);                        // at the start: nothing, offset unchanged
  CHECK(reader.read(std::span(one).first(0)) == 0);
  CHECK(reader.read(one) == 1);
  CHECK(one[0] == expected[0]);
  std::vector<std::byte> big(10000, std::byte{0x55});
  CHECK(reader.read(big) == 99);  // only what is left
  CHECK(std::equal(big.begin(), big.begin() + 99, expected.begin() + 1));
  CHECK(big[99] == std::byte{0x55});  // nothing written past what was read
  CHECK(reader.read(big) == 0);
  CHECK(reader.read({}) == 0);
  // A copied reader has its own offset.
  auto fresh = secret.reader();
  auto copy = fresh;
  CHECK(fresh.read(one) == 1);
  CHECK(copy.read(one) == 1);
  CHECK(one[0] == expected[0]);
}

SM_TEST("reader: moved-from readers and readers of closed secrets report closed, even for empty spans",
        "[bad-input][reader]") {
  const auto name = any_available_backend();
  Secret secret = securememory::make_factory(name).create_random(8);
  auto reader = secret.reader();
  auto moved = std::move(reader);
  std::array<std::byte, 8> out{};
  CHECK(test::error_of([&] { (void)reader.read(out); }) == errc::closed);  // NOLINT(bugprone-use-after-move)
  CHECK(test::error_of([&] { (void)reader.read({}); }) == errc::closed);   // NOLINT(bugprone-use-after-move)
  CHECK(moved.read(out) == 8);
  secret.close();
  CHECK(test::error_of([&] { (void)moved.read({}); }) == errc::closed);
  CHECK(test::error_of([&] { (void)moved.read(out); }) == errc::closed);
}

SM_TEST("reader: a reader follows its secret through a move of the handle", "[bad-input][reader]") {
  const auto name = any_available_backend();
  auto [expected, secret] = make_known(name, 20, 6);
  auto reader = secret.reader();
  const Secret moved = std::move(secret);
  std::array<std::byte, 20> out{};
  CHECK(reader.read(out) == 20);
  CHECK(std::equal(out.begin(), out.end(), expected.begin()));
  CHECK_FALSE(moved.is_closed());
}

// ---- callbacks ----------------------------------------------------------------

SM_TEST("null callbacks are invalid_argument before anything is opened", "[bad-input][callback]") {
  const auto name = any_available_backend();
  Secret secret = securememory::make_factory(name).create_random(16);
  void (*null_fn)(std::span<const std::byte>) = nullptr;
  int (*null_int_fn)(std::span<const std::byte>) = nullptr;
  const std::function<void(std::span<const std::byte>)> empty_function;
  test::call_counter counter;
  CHECK(test::error_of([&] { secret.with_bytes(null_fn); }) == errc::invalid_argument);
  CHECK(test::error_of([&] { (void)secret.with_bytes(null_int_fn); }) == errc::invalid_argument);
  CHECK(test::error_of([&] { secret.with_bytes(empty_function); }) == errc::invalid_argument);
  CHECK(counter.calls(call::mprotect) == 0);  // never opened
  // A real function pointer and a non-empty std::function work.
  int (*size_of)(std::span<const std::byte>) = [](std::span<const std::byte> b) { return static_cast<int>(b.size()); };
  CHECK(secret.with_bytes(size_of) == 16);
  const std::function<std::size_t(std::span<const std::byte>)> f = [](std::span<const std::byte> b) { return b.size(); };
  CHECK(secret.with_bytes(f) == 16);
}

SM_TEST("callbacks that throw anything: the exception comes back unchanged and the memory is no-access again",
        "[bad-input][callback]") {
  const auto name = any_available_backend();
  Secret secret = securememory::make_factory(name).create_random(32);
  Secret other = securememory::make_factory(name).create_random(8);
  const auto* addr = test::address_of(secret);
  const auto idle = test::find_mapping(addr);
  REQUIRE(idle);
  const std::string idle_perms = idle->perms.substr(0, 3);
  // sealed's plaintext scratch stays mapped read-write and holds zeros
  // outside an access (docs/backends.md); the others are no-access.
  const std::string no_access = test::plaintext_in_scratch(name) ? idle_perms : "---";
  CHECK(idle_perms == no_access);
  CHECK_THROWS_AS(secret.with_bytes([](std::span<const std::byte>) { throw 42; }), int);
  CHECK(test::find_mapping(addr)->perms.substr(0, 3) == idle_perms);
  // A securememory::error thrown by the callback is not confused with the library's own.
  try {
    secret.with_bytes([](std::span<const std::byte>) { throw securememory::error(errc::integrity_violation, "from the callback"); });
    FAIL("no exception");
  } catch (const securememory::error& e) {
    CHECK(e.code() == errc::integrity_violation);
    CHECK(std::string(e.what()).rfind("from the callback", 0) == 0);
  }
  // Thrown from two nested accesses deep: both secrets are no-access again.
  CHECK_THROWS_AS(secret.with_bytes([&](std::span<const std::byte>) {
    other.with_bytes([](std::span<const std::byte>) { throw std::logic_error("inner"); });
  }),
                  std::logic_error);
  CHECK(test::find_mapping(addr)->perms.substr(0, 3) == idle_perms);
  CHECK(test::find_mapping(test::address_of(other))->perms.substr(0, 3) == no_access);
  CHECK(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 32);
  CHECK(other.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 8);
}

// ---- logging ------------------------------------------------------------------

SM_TEST("a log sink that throws cannot turn a logged failure into a crash or a different error", "[bad-input][log]") {
  int calls = 0;
  const auto previous = securememory::set_log_sink([&calls](securememory::log_level, std::string_view) {
    ++calls;
    throw std::runtime_error("sink broke");
  });
  {
    Secret secret = securememory::make_factory("protectedmemory").create_random(16);
    const test::page_cache_limit uncached(0);  // so that the release unmaps
    test::fault_injector fail_munmap(call::munmap, EINVAL);
    secret = Secret{};  // the destructor's close fails and logs: must not throw
    CHECK(fail_munmap.injected() == 1);
  }
  {
    Secret secret = securememory::make_factory("protectedmemory").create_random(16);
    const test::page_cache_limit uncached(0);  // so that the release unmaps
    test::fault_injector fail_munmap(call::munmap, EINVAL);
    CHECK(test::error_of([&] { secret.close(); }) == errc::release_failed);  // the library's error, not the sink's
  }
  CHECK(calls == 1);  // the destructor logged (close() threw instead)
  securememory::set_log_sink(previous);
}

TEST_CASE("an empty log sink restores the default; a log sink may replace itself while it runs", "[bad-input][log]") {
  CHECK_FALSE(securememory::set_log_sink({}));  // the default was in force
  CHECK_FALSE(securememory::set_log_sink({}));
  int calls = 0;
  securememory::set_log_sink([&calls](securememory::log_level, std::string_view) {
    ++calls;
    securememory::set_log_sink({});  // no deadlock: the sink runs without the library's lock
  });
  {
    Secret secret = securememory::make_factory("protectedmemory").create_random(16);
    const test::page_cache_limit uncached(0);
    test::fault_injector fail_munmap(call::munmap, EINVAL);
    secret = Secret{};
  }
  CHECK(calls == 1);
  CHECK_FALSE(securememory::set_log_sink({}));  // the sink removed itself
}

// ---- errors -------------------------------------------------------------------

TEST_CASE("error codes outside the enum have a message; errors with empty text are fine", "[bad-input][errors]") {
  for (const int v : {0, -1, 999, std::numeric_limits<int>::min()}) {
    CHECK(securememory::category().message(v) == "unknown securememory error");
  }
  const securememory::error e(errc::closed, "");
  CHECK(e.code() == errc::closed);
  CHECK(e.sys_errno() == 0);
  CHECK(std::error_code(errc::closed) == securememory::make_error_code(errc::closed));
  CHECK(std::error_code(errc::closed) != std::error_code(1, std::generic_category()));
}
