// SecretFactory::create_with and create_from_fd, on every registered
// backend: the bytes are written straight into the secret's protected
// memory, a failing fill leaves nothing held and nothing unwiped, and the
// file-descriptor helper copes with short reads, EINTR, errors and an early
// end of input.
#include "support.hpp"

#include "proof/proof.hpp"

#include <sodium.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <unistd.h>

using securememory::errc;
using securememory::Secret;

namespace {

std::string any_backend() { return GENERATE(from_range(securememory::backend_names())); }

bool equal(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

struct fill_failed : std::runtime_error {
  fill_failed() : std::runtime_error("fill failed on purpose") {}
};

// A pipe whose ends close with the scope.
struct pipe_ends {
  int fds[2] = {-1, -1};  // NOLINT(modernize-avoid-c-arrays): pipe(2)'s argument
  pipe_ends() { REQUIRE(pipe(fds) == 0); }
  ~pipe_ends() {
    close_write();
    if (fds[0] >= 0) ::close(fds[0]);
  }
  pipe_ends(const pipe_ends&) = delete;
  pipe_ends& operator=(const pipe_ends&) = delete;
  void close_write() {
    if (fds[1] >= 0) ::close(fds[1]);
    fds[1] = -1;
  }
  [[nodiscard]] int read_end() const { return fds[0]; }
  [[nodiscard]] int write_end() const { return fds[1]; }
};

}  // namespace

SM_TEST("create_with writes the bytes straight into locked, dump-excluded memory", "[create_with]") {
  const auto name = any_backend();
  CAPTURE(name);
  auto factory = securememory::make_factory(name);
  for (const std::size_t size : {std::size_t{1}, std::size_t{32}, std::size_t{4096}, std::size_t{70000}}) {
    CAPTURE(size);
    const auto expected = test::pattern(size, static_cast<unsigned>(size));
    bool locked = false;
    bool dump_excluded = false;
    std::size_t seen = 0;
    auto secret = factory.create_with(size, [&](std::span<std::byte> out) {
      seen = out.size();
      const auto m = test::find_mapping(out.data());
      locked = m && m->has_flag("lo");
      dump_excluded = m && m->has_flag("dd");
      std::copy(expected.begin(), expected.end(), out.begin());
    });
    CHECK(seen == size);
    CHECK(locked);
    // Where lib/os/ has no dump exclusion (posix_only) a Linux libsodium
    // still applies it to memguard's pages by itself.
    if (name != "memguard") CHECK(dump_excluded == test::dump_exclusion_here());
    CHECK(secret.size() == size);
    CHECK(secret.with_bytes([&](std::span<const std::byte> b) { return equal(b, expected); }));
  }
}

SM_TEST("create_with: the memory is no-access once fill has returned", "[create_with]") {
  const auto name = any_backend();
  CAPTURE(name);
  const std::byte* where = nullptr;
  auto secret = securememory::make_factory(name).create_with(64, [&](std::span<std::byte> out) {
    where = out.data();
    std::fill(out.begin(), out.end(), std::byte{0x5a});
  });
  if (test::plaintext_in_scratch(name)) {
    CHECK(test::all_zero_at(where, 64));  // the scratch it was written into is wiped
  } else {
    const auto m = test::find_mapping(where);
    REQUIRE(m);
    CHECK(m->perms.substr(0, 3) == "---");
  }
}

SM_TEST("create_with: fill may read another secret (a derived key)", "[create_with]") {
  auto factory = securememory::make_factory(any_backend());
  auto parent = factory.create_random(32);
  auto child = factory.create_with(32, [&](std::span<std::byte> out) {
    parent.with_bytes([&](std::span<const std::byte> key) {
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = key[i] ^ std::byte{0xff};
    });
  });
  const bool derived = parent.with_bytes([&](std::span<const std::byte> key) {
    return child.with_bytes([&](std::span<const std::byte> sub) {
      for (std::size_t i = 0; i < sub.size(); ++i) {
        if (sub[i] != (key[i] ^ std::byte{0xff})) return false;
      }
      return true;
    });
  });
  CHECK(derived);
}

SM_TEST("create_with: a throwing fill wipes and releases the memory, and the exception propagates", "[create_with]") {
  const auto name = any_backend();
  CAPTURE(name);
  auto factory = securememory::make_factory(name);
  for (const std::size_t size : {std::size_t{32}, std::size_t{1} << 20U}) {
    CAPTURE(size);
    const auto before = securememory::metrics();
    std::optional<securememory::proof::wipe_watch> watch;
    CHECK_THROWS_AS(factory.create_with(size,
                                        [&](std::span<std::byte> out) {
                                          std::fill(out.begin(), out.end(), std::byte{0xa5});
                                          watch.emplace(out.data(), out.size());
                                          throw fill_failed();
                                        }),
                    fill_failed);
    REQUIRE(watch);
    const auto judged = watch->finish();
    INFO(judged.detail);
    CHECK(judged.state == securememory::proof::status::pass);
    const auto after = securememory::metrics();
    CHECK(after.in_use == before.in_use);
    CHECK(after.locked_bytes == before.locked_bytes);
    CHECK(after.allocated == before.allocated);
  }
}

SM_TEST("create_with: invalid sizes are refused before fill is called", "[create_with][errors]") {
  auto factory = securememory::make_factory(any_backend());
  bool called = false;
  auto fill = [&](std::span<std::byte>) { called = true; };
  CHECK(test::error_of([&] { (void)factory.create_with(0, fill); }) == errc::invalid_size);
  CHECK(test::error_of([&] { (void)factory.create_with(securememory::max_secret_size + 1, fill); }) ==
        errc::invalid_size);
  CHECK_FALSE(called);
}

SM_TEST("create_from_fd reads exactly size bytes across short reads", "[create_with][fd]") {
  const auto name = any_backend();
  CAPTURE(name);
  const auto expected = test::pattern(1000, 3);
  pipe_ends p;
  std::thread writer([&] {
    // Seven bytes at a time with pauses: the reader sees many short reads.
    for (std::size_t i = 0; i < expected.size(); i += 7) {
      const std::size_t n = std::min<std::size_t>(7, expected.size() - i);
      REQUIRE(write(p.write_end(), expected.data() + i, n) == static_cast<ssize_t>(n));
      if (i % 140 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const char tail[] = "tail";  // NOLINT(modernize-avoid-c-arrays): after the secret, must stay unread
    REQUIRE(write(p.write_end(), tail, 4) == 4);
  });
  auto secret = securememory::make_factory(name).create_from_fd(p.read_end(), expected.size());
  writer.join();
  CHECK(secret.with_bytes([&](std::span<const std::byte> b) { return equal(b, expected); }));
  std::array<char, 8> rest{};
  CHECK(read(p.read_end(), rest.data(), rest.size()) == 4);  // nothing past `size` was consumed
  CHECK(std::string_view(rest.data(), 4) == "tail");
}

SM_TEST("create_from_fd retries EINTR", "[create_with][fd]") {
  auto factory = securememory::make_factory(any_backend());
  const auto expected = test::pattern(48, 9);
  pipe_ends p;
  REQUIRE(write(p.write_end(), expected.data(), expected.size()) == 48);
  const test::fault_injector interrupted(securememory::detail::os::call::read, EINTR, 0, 3);
  auto secret = factory.create_from_fd(p.read_end(), 48);
  CHECK(interrupted.injected() == 3);
  CHECK(secret.with_bytes([&](std::span<const std::byte> b) { return equal(b, expected); }));
}

SM_TEST("create_from_fd: an early end of input is read_failed and nothing is held", "[create_with][fd]") {
  auto factory = securememory::make_factory(any_backend());
  const auto before = securememory::metrics();
  pipe_ends p;
  const auto some = test::pattern(20, 4);
  REQUIRE(write(p.write_end(), some.data(), some.size()) == 20);
  p.close_write();
  const auto e = test::caught([&] { (void)factory.create_from_fd(p.read_end(), 32); });
  REQUIRE(e);
  CHECK(e->code == errc::read_failed);
  CHECK(e->sys_errno == 0);
  CHECK(e->what.find("20 of the 32 bytes") != std::string::npos);
  CHECK(securememory::metrics().in_use == before.in_use);
  CHECK(securememory::metrics().allocated == before.allocated);
}

SM_TEST("create_from_fd: a failing read is read_failed with its errno", "[create_with][fd]") {
  auto factory = securememory::make_factory(any_backend());
  const auto bad = test::caught([&] { (void)factory.create_from_fd(-1, 16); });
  REQUIRE(bad);
  CHECK(bad->code == errc::read_failed);
  CHECK(bad->sys_errno == EBADF);
  CHECK(bad->what.find("EBADF") != std::string::npos);
  pipe_ends p;
  const test::fault_injector eio(securememory::detail::os::call::read, EIO, 0, 1);
  const auto injected = test::caught([&] { (void)factory.create_from_fd(p.read_end(), 16); });
  REQUIRE(injected);
  CHECK(injected->code == errc::read_failed);
  CHECK(injected->sys_errno == EIO);
}

SM_TEST("create_from_fd: size 0 and oversized requests read nothing", "[create_with][fd][errors]") {
  auto factory = securememory::make_factory(any_backend());
  pipe_ends p;
  REQUIRE(write(p.write_end(), "abc", 3) == 3);
  CHECK(test::error_of([&] { (void)factory.create_from_fd(p.read_end(), 0); }) == errc::invalid_size);
  CHECK(test::error_of([&] { (void)factory.create_from_fd(p.read_end(), securememory::max_secret_size + 1); }) ==
        errc::invalid_size);
  std::array<char, 4> rest{};
  CHECK(read(p.read_end(), rest.data(), rest.size()) == 3);
}
