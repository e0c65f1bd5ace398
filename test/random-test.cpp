// The library's random-number generator (lib/random.hpp): used by
// create_random() and sealed's keys, seeded from the kernel once per process
// generation, reseeded in a forked child, its state locked and excluded from
// core dumps, and its keystream scrubbed from the stack. No test prints or
// returns a random byte: children report hashes or yes/no.
#include "support.hpp"
#include "child-digest.hpp"
#include "stack-probe.hpp"

#include "random.hpp"
#include "scrub.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <bitset>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

namespace csprng = securememory::detail::csprng;

namespace {

using digest = std::array<unsigned char, 32>;

digest hash_of(const std::vector<std::byte>& bytes) {
  digest d{};
  crypto_generichash(d.data(), d.size(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), nullptr,
                     0);
  return d;
}

std::vector<std::byte> draw(std::size_t n) {
  std::vector<std::byte> out(n);
  csprng::fill(out.data(), out.size());
  return out;
}

// Runs fn in a forked child and returns the 32 bytes it reports (a hash or
// flags, never random bytes themselves); the child must exit 0.
digest from_child(const std::function<digest()>& fn) {
  return test::digest_from_child([&](bool&) { return fn(); });
}

}  // namespace

TEST_CASE("csprng: outputs of every length differ from each other and cover every byte value", "[random]") {
  (void)securememory::make_factory("sealed");  // libsodium initialised
  std::set<digest> seen;
  for (const std::size_t n : {16, 31, 32, 33, 64, 100, 4096}) {  // 16 bytes: no collision in 2^-100
    for (int i = 0; i < 50; ++i) CHECK(seen.insert(hash_of(draw(n))).second);
  }
  std::bitset<256> values;
  for (const std::byte b : draw(std::size_t{1} << 16U)) values.set(static_cast<unsigned char>(b));
  CHECK(values.all());
  // Requests are served from a buffer whose bytes are handed out once: no
  // byte run of one request reappears in the next.
  const auto a = draw(32);
  const auto b = draw(32);
  CHECK(std::search(b.begin(), b.end(), a.begin(), a.begin() + 8) == b.end());
}

TEST_CASE("csprng: no system call per request: one kernel seeding per process, 10,000 create_random", "[random]") {
  auto factory = securememory::make_factory("sealed");
  (void)factory.create_random(32);
  const std::uint64_t before = csprng::kernel_seedings();
  REQUIRE(before >= 1);
  for (int i = 0; i < 10000; ++i) (void)factory.create_random(32);
  for (const auto& name : securememory::backend_names()) {
    if (securememory::backend_available(name)) (void)securememory::make_factory(name).create_random(64);
  }
  CHECK(csprng::kernel_seedings() == before);
}

TEST_CASE("csprng: 8 threads draw distinct outputs (each thread's slot, under its mutex)", "[random][concurrency]") {
  (void)securememory::make_factory("sealed");
  std::vector<std::vector<digest>> per_thread(8);
  std::vector<std::thread> threads;
  for (auto& mine : per_thread) {
    threads.emplace_back([&mine] {
      for (int i = 0; i < 500; ++i) mine.push_back(hash_of(draw(32)));
    });
  }
  for (auto& t : threads) t.join();
  std::set<digest> all;
  for (const auto& mine : per_thread) all.insert(mine.begin(), mine.end());
  CHECK(all.size() == 8 * 500);
}

TEST_CASE("csprng: parent and child streams differ after fork, and the child seeds once from the kernel", "[random][fork]") {
  (void)securememory::make_factory("sealed");
  (void)draw(32);  // seeded here before the fork
  const std::uint64_t parent_seedings = csprng::kernel_seedings();
  // Without a reseed the child's next output would be the parent's next
  // output: same slot (same thread number), same key.
  const digest child = from_child([] {
    const std::uint64_t inherited = csprng::kernel_seedings();
    digest d = hash_of(draw(32));
    for (int i = 0; i < 1000; ++i) (void)draw(32);
    if (csprng::kernel_seedings() != inherited + 1) d.fill(0);  // reported as a mismatch below
    return d;
  });
  const digest parent = hash_of(draw(32));
  CHECK(child != parent);
  CHECK(child != digest{});
  CHECK(csprng::kernel_seedings() == parent_seedings);
  // Two children of the same parent: different streams too.
  const digest second = from_child([] { return hash_of(draw(32)); });
  CHECK(second != child);
  CHECK(second != parent);
}

TEST_CASE("csprng: the state is locked, don't-dump and wipe-on-fork; a child's copy is zero until it seeds", "[random][smaps][fork]") {
  (void)securememory::make_factory("sealed");
  (void)draw(32);
  const auto state = csprng::state_for_tests();
  REQUIRE(!state.empty());
  const auto m = test::find_mapping(state.data());
  REQUIRE(m);
  CHECK(m->has_flag("lo"));
  // What lib/os/ provides in this build (the posix_only build: neither).
  CHECK(m->has_flag("dd") == test::dump_exclusion_here());
  CHECK(m->has_flag("wf") == test::wipe_on_fork_here());
  CHECK(m->locked_kb * 1024 >= state.size());
  CHECK(csprng::locked_bytes() == state.size());
  CHECK(std::any_of(state.begin(), state.end(), [](std::byte b) { return b != std::byte{0}; }));

  const digest report = from_child([] {
    digest d{};
    const auto s = csprng::state_for_tests();
    d[0] = std::all_of(s.begin(), s.end(), [](std::byte b) { return b == std::byte{0}; }) ? 1 : 0;
    d[1] = csprng::locked_bytes() == 0 ? 1 : 0;  // locks are not inherited
    (void)draw(32);
    const auto m = test::find_mapping(s.data());
    d[2] = m && m->has_flag("lo") && m->locked_kb * 1024 >= s.size() ? 1 : 0;  // locked again
    d[3] = csprng::locked_bytes() == s.size() ? 1 : 0;
    return d;
  });
  // Without wipe-on-fork the child holds a copy of the parent's state until
  // its first draw reseeds every slot (the stream still differs: above).
  CHECK(report[0] == (test::wipe_on_fork_here() ? 1 : 0));
  CHECK(report[1] == 1);
  CHECK(report[2] == 1);
  CHECK(report[3] == 1);
}

TEST_CASE("csprng: a request leaves no keystream on the stack beyond what scrub_after_cipher erases", "[random][scrub]") {
  (void)securememory::make_factory("sealed");
  (void)draw(32);
  const std::size_t scrubbed = test::stack_depth([] { securememory::detail::scrub_after_cipher(); }, test::probe_kind::written);
  for (const std::size_t n : {32, 1000}) {
    CAPTURE(n);
    std::vector<std::byte> out(n);
    // libsodium's ChaCha20 on its own, from the same depth: the scrub must reach as far.
    std::array<unsigned char, crypto_stream_chacha20_ietf_KEYBYTES> key{};
    std::array<unsigned char, crypto_stream_chacha20_ietf_NONCEBYTES> nonce{};
    const std::size_t raw = test::stack_depth(
        [&] { crypto_stream_chacha20_ietf(reinterpret_cast<unsigned char*>(out.data()), n, nonce.data(), key.data()); },
        test::probe_kind::written);
    // The generator itself: what it leaves that is neither paint nor zero
    // lies within its own frames and the scrub.
    const std::size_t left = test::stack_depth([&] { csprng::fill(out.data(), n); }, test::probe_kind::residue);
    WARN("ChaCha20 of " << n << " bytes writes " << raw << " bytes below its caller; scrub_after_cipher erases "
                        << scrubbed << "; csprng::fill leaves bytes down to " << left);
    CHECK(raw <= scrubbed);
    CHECK(left <= scrubbed + 256);
  }
}
