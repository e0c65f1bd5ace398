// The public API, run against every registered backend: round trips,
// wiping of the source, sizes, access results and exceptions, the reader,
// move semantics, closing (double, reentrant, use after close), errors.
#include "support.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

using securememory::errc;
using securememory::Secret;

namespace {

std::string any_backend() { return GENERATE(from_range(securememory::backend_names())); }

bool equal(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

bool all_zero(std::span<const std::byte> a) {
  return std::all_of(a.begin(), a.end(), [](std::byte b) { return b == std::byte{0}; });
}

}  // namespace

SM_TEST("create copies the source into the secret and wipes the source", "[api]") {
  const auto name = any_backend();
  auto factory = securememory::make_factory(name);
  for (const std::size_t size : {std::size_t{1}, std::size_t{32}, std::size_t{4096}, std::size_t{4097}, std::size_t{1} << 20U}) {
    const auto expected = test::pattern(size, static_cast<unsigned>(size));
    auto source = expected;
    auto secret = factory.create(source);
    CHECK(all_zero(source));
    CHECK(secret.size() == size);
    CHECK(secret.backend() == name);
    CHECK_FALSE(secret.is_closed());
    CHECK(secret.with_bytes([&](std::span<const std::byte> b) { return equal(b, expected); }));
  }
}

SM_TEST("create_random fills the secret from the CSPRNG", "[api]") {
  auto factory = securememory::make_factory(any_backend());
  auto a = factory.create_random(64);
  auto b = factory.create_random(64);
  std::vector<std::byte> copy_a(64);
  a.with_bytes([&](std::span<const std::byte> bytes) { std::copy(bytes.begin(), bytes.end(), copy_a.begin()); });
  CHECK_FALSE(all_zero(copy_a));
  // Two 64-byte random secrets are equal with probability 2^-512.
  CHECK_FALSE(b.with_bytes([&](std::span<const std::byte> bytes) { return equal(bytes, copy_a); }));
  sodium_memzero(copy_a.data(), copy_a.size());
}

SM_TEST("sizes of zero and sizes whose page rounding overflows are invalid_size", "[api][errors]") {
  auto factory = securememory::make_factory(any_backend());
  const auto before = securememory::metrics();
  constexpr auto max = std::numeric_limits<std::size_t>::max();
  for (const std::size_t size : {std::size_t{0}, max, max - 1, max - 4094}) {  // max - 4094 + 4095 overflows
    CHECK(test::error_of([&] { (void)factory.create_random(size); }) == errc::invalid_size);
  }
  // Just below the overflow the rounding works and the kernel refuses the size.
  const auto near = test::error_of([&] { (void)factory.create_random(max - 4095); });
  CHECK((near == errc::invalid_size || near == errc::out_of_memory));
  std::vector<std::byte> empty;
  CHECK(test::error_of([&] { (void)factory.create(empty); }) == errc::invalid_size);
  CHECK(securememory::metrics().allocated == before.allocated);
}

SM_TEST("with_bytes returns the callback's result (by value)", "[api]") {
  auto secret = securememory::make_factory(any_backend()).create_random(16);
  CHECK(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 16);
  const auto copy = secret.with_bytes([](std::span<const std::byte> b) { return std::vector<std::byte>(b.begin(), b.end()); });
  CHECK(copy.size() == 16);
  bool called = false;
  secret.with_bytes([&](std::span<const std::byte>) { called = true; });
  CHECK(called);
}

SM_TEST("an exception from the callback propagates after the memory is no-access again", "[api]") {
  const auto name = any_backend();
  CAPTURE(name);
  auto secret = securememory::make_factory(name).create_random(32);
  const auto* addr = test::address_of(secret);
  CHECK_THROWS_AS(secret.with_bytes([](std::span<const std::byte>) -> int { throw std::runtime_error("boom"); }),
                  std::runtime_error);
  const auto m = test::find_mapping(addr);
  REQUIRE(m);
  if (test::plaintext_in_scratch(name)) {
    CHECK(test::all_zero_at(addr, 32));  // the scratch was wiped on the way out
  } else {
    CHECK(m->perms.substr(0, 3) == "---");
  }
  CHECK(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 32);  // still usable
}

SM_TEST("nested with_bytes on the same secret shares the opening", "[api]") {
  auto secret = securememory::make_factory(any_backend()).create_random(8);
  const auto inner = secret.with_bytes([&](std::span<const std::byte> outer) {
    return secret.with_bytes([&](std::span<const std::byte> in) { return in.data() == outer.data(); });
  });
  CHECK(inner);
}

SM_TEST("reader copies the bytes out in order and returns 0 at the end", "[api][reader]") {
  const auto expected = test::pattern(1000, 7);
  auto source = expected;
  auto secret = securememory::make_factory(any_backend()).create(source);
  auto reader = secret.reader();
  std::vector<std::byte> got;
  std::array<std::byte, 64> chunk{};
  CHECK(reader.read(std::span<std::byte>{}) == 0);  // an empty out is a no-op
  for (std::size_t n = 0; (n = reader.read(chunk)) != 0;) got.insert(got.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
  CHECK(got == expected);
  CHECK(reader.read(chunk) == 0);
  secret.close();
  CHECK(test::error_of([&] { (void)reader.read(chunk); }) == errc::closed);
  CHECK(test::error_of([&] { (void)secret.reader(); }) == errc::closed);
}

SM_TEST("a reader outliving its secret reports closed", "[api][reader]") {
  std::optional<securememory::Reader> reader;
  {
    auto secret = securememory::make_factory(any_backend()).create_random(16);
    reader = secret.reader();
  }
  std::array<std::byte, 16> out{};
  CHECK(test::error_of([&] { (void)reader->read(out); }) == errc::closed);
}

SM_TEST("close is idempotent and use after close throws closed", "[api][close]") {
  auto secret = securememory::make_factory(any_backend()).create_random(32);
  const auto in_use = securememory::metrics().in_use;
  secret.close();
  CHECK(secret.is_closed());
  CHECK(securememory::metrics().in_use == in_use - 1);
  secret.close();  // no-op
  CHECK(securememory::metrics().in_use == in_use - 1);
  CHECK(test::error_of([&] { secret.with_bytes([](std::span<const std::byte>) {}); }) == errc::closed);
}

SM_TEST("close from inside the secret's own callback is reentrant_close, not a deadlock", "[api][close]") {
  auto secret = securememory::make_factory(any_backend()).create_random(32);
  std::optional<errc> got;
  secret.with_bytes([&](std::span<const std::byte>) { got = test::error_of([&] { secret.close(); }); });
  CHECK(got == errc::reentrant_close);
  CHECK_FALSE(secret.is_closed());
  CHECK(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 32);
  // Closing another secret from inside a callback is allowed.
  auto other = securememory::make_factory(any_backend()).create_random(8);
  secret.with_bytes([&](std::span<const std::byte>) { other.close(); });
  CHECK(other.is_closed());
}

SM_TEST("destroying a secret inside its own callback closes it when the callback returns", "[api][close]") {
  auto holder = std::make_unique<Secret>(securememory::make_factory(any_backend()).create_random(32));
  const auto in_use = securememory::metrics().in_use;
  Secret* raw = holder.get();
  raw->with_bytes([&](std::span<const std::byte> b) {
    holder.reset();                                   // handle gone, access still in flight
    CHECK(securememory::metrics().in_use == in_use);  // not released under the callback's feet
    CHECK(b[0] == b[0]);                              // still readable
  });
  CHECK(securememory::metrics().in_use == in_use - 1);
}

SM_TEST("a moved-from secret is empty and closed; move assignment closes the target", "[api][move]") {
  auto factory = securememory::make_factory(any_backend());
  auto a = factory.create_random(32);
  Secret b = std::move(a);
  CHECK(a.is_closed());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  CHECK(a.size() == 0);
  CHECK(a.backend().empty());
  CHECK(test::error_of([&] { a.with_bytes([](std::span<const std::byte>) {}); }) == errc::closed);
  CHECK(test::error_of([&] { (void)a.reader(); }) == errc::closed);
  a.close();  // no-op
  CHECK(b.size() == 32);
  const auto in_use = securememory::metrics().in_use;
  b = factory.create_random(16);  // the old 32-byte secret is closed
  CHECK(securememory::metrics().in_use == in_use);
  CHECK(b.size() == 16);
  Secret empty;
  CHECK(empty.is_closed());
}

SM_TEST("move assignment closes the target's secret, not merely drops the handle", "[api][move]") {
  auto factory = securememory::make_factory(any_backend());
  auto target = factory.create_random(32);
  auto reader = target.reader();  // a second reference to the old secret: dropping the handle would not close it
  const auto in_use = securememory::metrics().in_use;
  target = factory.create_random(16);
  std::array<std::byte, 8> out{};
  CHECK(test::error_of([&] { (void)reader.read(out); }) == errc::closed);
  CHECK(securememory::metrics().in_use == in_use);  // one closed, one created
}

SM_TEST("metrics count secrets and their locked pages", "[api][metrics]") {
  auto factory = securememory::make_factory("protectedmemory");
  const auto before = securememory::metrics();
  {
    auto s = factory.create_random(5000);  // two pages
    const auto now = securememory::metrics();
    CHECK(now.allocated == before.allocated + 1);
    CHECK(now.in_use == before.in_use + 1);
    CHECK(now.locked_bytes == before.locked_bytes + 8192);
  }
  CHECK(securememory::metrics().allocated == before.allocated + 1);
}

TEST_CASE("every Errc compares equal to its std::errc condition and has a name", "[errors]") {
  using E = securememory::Errc;
  const std::vector<std::pair<E, std::errc>> map{
      {E::closed, std::errc::bad_file_descriptor},          {E::invalid_size, std::errc::invalid_argument},
      {E::memlock_limit, std::errc::not_enough_memory},     {E::out_of_memory, std::errc::not_enough_memory},
      {E::protection_failed, std::errc::permission_denied}, {E::unknown_backend, std::errc::invalid_argument},
      {E::duplicate_backend, std::errc::file_exists},       {E::backend_unavailable, std::errc::not_supported},
      {E::reentrant_close, std::errc::resource_deadlock_would_occur},
      {E::integrity_violation, std::errc::state_not_recoverable},
      {E::release_failed, std::errc::io_error},            {E::invalid_argument, std::errc::invalid_argument},
      {E::read_failed, std::errc::io_error},
  };
  CHECK(map.size() == static_cast<std::size_t>(E::read_failed));  // every value
  for (const auto& [ours, theirs] : map) {
    CAPTURE(securememory::to_string(ours));
    const std::error_code code = ours;
    CHECK(code == theirs);
    CHECK(securememory::to_string(ours) != "unknown");
    CHECK(securememory::category().message(static_cast<int>(ours)) != "unknown securememory error");
  }
  CHECK(std::error_code(E::out_of_memory) != std::errc::io_error);
  CHECK(E::canary_violation == E::integrity_violation);  // the earlier name
  CHECK(securememory::to_string(securememory::Access::read_write) == "read_write");
  CHECK(securememory::to_string(securememory::ViolationCheck::on_verify) == "on_verify");
  CHECK(securememory::to_string(securememory::ViolationKind::authentication_failed) == "authentication_failed");
  CHECK(securememory::to_string(securememory::ViolationPolicy::quarantine) == "quarantine");
}

SM_TEST("the error_code overloads report what the throwing ones throw, and keep the message", "[errors][api]") {
  auto factory = securememory::make_factory(any_backend());
  std::error_code ec;
  (void)factory.create_random(0, ec);
  CHECK(ec == errc::invalid_size);
  CHECK(securememory::last_error_message().find("at least 1 byte") != std::string_view::npos);
  auto secret = factory.create_random(16, ec);
  CHECK_FALSE(ec);
  const auto n = secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }, ec);
  CHECK_FALSE(ec);
  CHECK(n == std::optional<std::size_t>(16));
  secret.close(ec);
  CHECK_FALSE(ec);
  CHECK_FALSE(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }, ec).has_value());
  CHECK(ec == errc::closed);
  secret.verify(ec);
  CHECK(ec == errc::closed);
  CHECK_FALSE(secret.reader(ec).has_value());
  CHECK(ec == errc::closed);
  CHECK_FALSE(securememory::make_factory("no-such-backend", ec).has_value());
  CHECK(ec == errc::unknown_backend);
  // An exception of the caller's own still propagates from create_with(ec).
  CHECK_THROWS_AS(factory.create_with(8, [](std::span<std::byte>) { throw std::runtime_error("mine"); }, ec),
                  std::runtime_error);
}

SM_TEST("equal() compares secrets and bytes in constant time", "[api]") {
  auto factory = securememory::make_factory(any_backend());
  auto pattern = test::pattern(32, 5);
  auto copy = pattern;
  const auto expected = pattern;
  auto a = factory.create(pattern);
  auto b = factory.create(copy);
  auto c = factory.create_random(32);
  auto shorter = factory.create_random(16);
  CHECK(securememory::equal(a, b));
  CHECK_FALSE(securememory::equal(a, c));
  CHECK_FALSE(securememory::equal(a, shorter));
  CHECK(securememory::equal(a, std::span<const std::byte>(expected)));
  CHECK_FALSE(securememory::equal(a, std::span<const std::byte>(expected).first(31)));
  b.close();
  CHECK(test::error_of([&] { (void)securememory::equal(a, b); }) == errc::closed);
}

TEST_CASE("version(): the library's version matches these headers", "[api]") {
  CHECK(securememory::version() == SECUREMEMORY_VERSION_STRING);
  CHECK(SECUREMEMORY_VERSION == SECUREMEMORY_VERSION_MAJOR * 10000 + SECUREMEMORY_VERSION_MINOR * 100 + SECUREMEMORY_VERSION_PATCH);
}

TEST_CASE("WipingBuffer: zeroed, wiped when destroyed, cleared or resized", "[api][buffer]") {
  securememory::WipingBuffer buffer(64);
  CHECK(buffer.size() == 64);
  CHECK(std::all_of(buffer.data(), buffer.data() + 64, [](std::byte x) { return x == std::byte{0}; }));
  std::fill(buffer.data(), buffer.data() + 64, std::byte{0x77});
  buffer.resize(100);
  CHECK(buffer.size() == 100);
  CHECK(buffer.data()[63] == std::byte{0x77});
  CHECK(buffer.data()[64] == std::byte{0});
  // What Reader::read copies out, into a buffer that wipes itself.
  auto secret = securememory::make_factory(any_backend()).create_random(40);
  auto reader = secret.reader();
  securememory::WipingBuffer out(40);
  CHECK(reader.read(out) == 40);
  CHECK(securememory::equal(secret, out));
  securememory::WipingBuffer moved = std::move(out);
  CHECK(out.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  CHECK(moved.size() == 40);
  moved.clear();
  CHECK(moved.empty());
  CHECK(moved.data() == nullptr);
}

TEST_CASE("errors are system_errors in the securememory category", "[errors]") {
  const securememory::error e(errc::memlock_limit, "what happened", ENOMEM);
  const std::system_error& base = e;
  CHECK(base.code().category().name() == std::string("securememory"));
  CHECK(base.code() == errc::memlock_limit);
  CHECK(e.sys_errno() == ENOMEM);
  CHECK(std::string(e.what()).find("what happened") != std::string::npos);
  for (int v = 1; v <= static_cast<int>(errc::read_failed); ++v) {
    CHECK(securememory::category().message(v) != "unknown securememory error");
  }
}
