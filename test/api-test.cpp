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

SM_TEST("with_bytes returns the callback's result, including references", "[api]") {
  auto secret = securememory::make_factory(any_backend()).create_random(16);
  CHECK(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 16);
  int value = 0;
  int& ref = secret.with_bytes([&](std::span<const std::byte>) -> int& { return value; });
  CHECK(&ref == &value);
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

TEST_CASE("errors are system_errors in the securememory category", "[errors]") {
  const securememory::error e(errc::memlock_limit, "what happened", ENOMEM);
  const std::system_error& base = e;
  CHECK(base.code().category().name() == std::string("securememory"));
  CHECK(base.code() == errc::memlock_limit);
  CHECK(e.sys_errno() == ENOMEM);
  CHECK(std::string(e.what()).find("what happened") != std::string::npos);
  for (int v = 1; v <= static_cast<int>(errc::invalid_argument); ++v) {
    CHECK(securememory::category().message(v) != "unknown securememory error");
  }
}
