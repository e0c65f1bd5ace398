// The per-secret state of the access state machine (lib/secret.cpp,
// lib/state_pool.cpp): one 64-byte pool block per secret, blocks reused,
// the backend kept alive by its secrets, the region a backend hands out
// returned to it field by field, and the 32-bit size limits enforced.
#include "support.hpp"

#include "state_pool.hpp"

#include <securememory/secret.hpp>

#include <cstring>
#include <memory>
#include <vector>

using securememory::errc;

namespace {

// A backend that checks that every call gets back exactly the region it
// handed out. Its memory is plain heap (no protection): it tests the state
// machine, not the kernel.
struct record {
  int destroyed = 0;
  int released = 0;
  int mismatches = 0;
  std::size_t released_mapped = 0;
};

class recording_backend final : public securememory::backend {
 public:
  recording_backend(record& rec, std::size_t mapped, std::size_t locked)
      : rec_(rec), mapped_(mapped), locked_(locked) {}
  ~recording_backend() override { ++rec_.destroyed; }
  recording_backend(const recording_backend&) = delete;
  recording_backend& operator=(const recording_backend&) = delete;

  [[nodiscard]] std::string_view name() const noexcept override { return "recording"; }

  [[nodiscard]] securememory::region allocate(std::size_t size) override {
    auto* memory = new std::byte[size + 7];
    base_ = memory;
    securememory::region r;
    r.data = memory + 7;  // data != base: both must come back
    r.size = size;
    r.base = memory;
    r.mapped = mapped_;
    r.locked = locked_;
    r.current = securememory::access::read_write;
    size_ = size;
    return r;
  }

  std::optional<securememory::ViolationKind> protect(securememory::region& r, securememory::access a) override {
    check(r);
    r.current = a;
    return std::nullopt;
  }

  void release(securememory::region& r) override {
    ++rec_.released;
    rec_.released_mapped = r.mapped;
    if (r.base != base_ || r.data != static_cast<std::byte*>(base_) + 7 || r.size != size_) ++rec_.mismatches;
    delete[] static_cast<std::byte*>(r.base);
    r = securememory::region{};
  }

 private:
  void check(const securememory::region& r) {
    if (r.base != base_ || r.data != static_cast<std::byte*>(base_) + 7 || r.size != size_ || r.mapped != mapped_ ||
        r.locked != locked_) {
      ++rec_.mismatches;
    }
  }

  record& rec_;
  std::size_t mapped_;
  std::size_t locked_;
  void* base_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace

SM_TEST("a secret's state is one 64-byte pool block, reused after close", "[state]") {
  STATIC_REQUIRE(securememory::detail::state_pool::block_size == 64);
  const auto name = GENERATE(from_range(securememory::backend_names()));
  CAPTURE(name);
  auto factory = securememory::make_factory(name);
  (void)factory.create_random(32);  // the pool's first chunk exists
  const auto start = securememory::detail::state_pool::stats();
  {
    std::vector<securememory::Secret> held;
    for (int i = 0; i < 100; ++i) held.push_back(factory.create_random(32));
    const auto now = securememory::detail::state_pool::stats();
    CHECK(now.in_use == start.in_use + 100);
  }
  CHECK(securememory::detail::state_pool::stats().in_use == start.in_use);
  // Create and close many more than a chunk holds: the freed blocks are
  // reused, nothing more is reserved.
  const auto reserved = securememory::detail::state_pool::stats().reserved;
  for (int i = 0; i < 3000; ++i) {
    auto s = factory.create_random(16);
    s.close();
  }
  const auto end = securememory::detail::state_pool::stats();
  CHECK(end.in_use == start.in_use);
  CHECK(end.reserved == reserved);
}

SM_TEST("a secret's state stays until its last Reader is gone", "[state]") {
  auto factory = securememory::make_factory("protectedmemory");
  const auto start = securememory::detail::state_pool::stats().in_use;
  auto expected = test::pattern(64, 3);
  auto source = expected;
  std::optional<securememory::Reader> reader;
  {
    auto secret = factory.create(source);
    reader.emplace(secret.reader());
  }
  // The handle closed the secret; the Reader still holds the state.
  CHECK(securememory::detail::state_pool::stats().in_use == start + 1);
  std::vector<std::byte> out(8);
  CHECK(test::error_of([&] { (void)reader->read(out); }) == errc::closed);
  reader.reset();
  CHECK(securememory::detail::state_pool::stats().in_use == start);
}

SM_TEST("a backend lives as long as its factory copies and its secrets", "[state]") {
  record rec;
  std::optional<securememory::Secret> secret;
  {
    securememory::SecretFactory factory(std::make_shared<recording_backend>(rec, 4096, 0));
    const securememory::SecretFactory copy = factory;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the test
    secret = copy.create_random(32);
  }
  CHECK(rec.destroyed == 0);  // the secret keeps the backend
  CHECK(secret->backend() == "recording");
  CHECK(secret->with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 32);
  secret->close();
  CHECK(rec.released == 1);
  CHECK(rec.destroyed == 0);  // the closed handle still names its backend
  CHECK(secret->backend() == "recording");
  secret.reset();
  CHECK(rec.destroyed == 1);
  CHECK(rec.mismatches == 0);
}

SM_TEST("the region a backend hands out comes back to it field by field", "[state]") {
  record rec;
  {
    // Values that need every bit of the 32-bit fields, and a locked size
    // different from the mapped one.
    securememory::SecretFactory factory(std::make_shared<recording_backend>(rec, 0xFFFF'FFFFU, 0x1234'5678U));
    auto secret = factory.create_random(100);
    for (int i = 0; i < 3; ++i) {
      CHECK(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 100);
    }
    secret.verify();
    secret.close();
    CHECK(rec.released_mapped == 0xFFFF'FFFFU);
  }
  CHECK(rec.mismatches == 0);
  CHECK(rec.released == 1);
  CHECK(rec.destroyed == 1);
}

SM_TEST("a backend that needs more than 4 GiB for a secret is refused, and its memory released", "[state]") {
  record rec;
  {
    const std::size_t five_gib = std::size_t{5} << 30U;
    securememory::SecretFactory factory(std::make_shared<recording_backend>(rec, five_gib, 0));
    const auto error = test::caught([&] { (void)factory.create_random(32); });
    REQUIRE(error.has_value());
    CHECK(error->code == errc::invalid_size);
    CHECK(error->what.find("4 GiB") != std::string::npos);
    CHECK(rec.released == 1);
    CHECK(rec.released_mapped == five_gib);  // released with the size it reported, not a truncated one
  }
  CHECK(rec.destroyed == 1);
}

SM_TEST("sizes above max_secret_size are invalid_size in every backend, before any memory is taken", "[state]") {
  STATIC_REQUIRE(securememory::max_secret_size == (std::size_t{1} << 32U) - (std::size_t{1} << 20U));
  const auto name = GENERATE(from_range(securememory::backend_names()));
  CAPTURE(name);
  auto factory = securememory::make_factory(name);
  const auto before = securememory::metrics();
  for (const std::size_t size : {securememory::max_secret_size + 1, std::size_t{1} << 32U, std::size_t{1} << 40U}) {
    CAPTURE(size);
    const auto error = test::caught([&] { (void)factory.create_random(size); });
    REQUIRE(error.has_value());
    CHECK(error->code == errc::invalid_size);
    CHECK(error->what.find("max_secret_size") != std::string::npos);
  }
  CHECK(securememory::metrics().allocated == before.allocated);
}
