// securememory proof: the life of a secret across processes and limits:
// fork (a child sees no byte and can close or destroy an inherited secret;
// the parent's stays intact), and memlock exhaustion (RLIMIT_MEMLOCK without
// CAP_IPC_LOCK: memlock_limit naming the limit, nothing leaked).
//
// Theory of operation: everything that changes process limits or may crash
// runs in a forked child (run_child, run_child_check); secrets are compared
// through digests, never printed.
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <securememory/error.hpp>
#include <securememory/metrics.hpp>
#include <securememory/page_cache.hpp>
#include <securememory/registry.hpp>

#include <sodium.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sys/mman.h>
#include <sys/resource.h>

namespace securememory::proof {
namespace {

using digest = std::array<unsigned char, crypto_generichash_BYTES>;

digest digest_of(const Secret& s) {
  return s.with_bytes([](std::span<const std::byte> b) {
    digest d{};
    crypto_generichash(d.data(), d.size(), reinterpret_cast<const unsigned char*>(b.data()), b.size(), nullptr, 0);
    return d;
  });
}


// In a forked child: the secret's pages hold no non-zero byte (or are not
// mapped). Uses mprotect directly: the child is a probe, not the library.
result child_view(const std::byte* data, std::size_t size) {
  const std::size_t page = page_size();
  const std::uintptr_t lo = reinterpret_cast<std::uintptr_t>(data) / page * page;
  const std::uintptr_t hi = (reinterpret_cast<std::uintptr_t>(data) + size + page - 1) / page * page;
  if (mprotect(reinterpret_cast<void*>(lo), hi - lo, PROT_READ) != 0) {  // NOLINT(performance-no-int-to-ptr): page arithmetic
    if (errno == ENOMEM) return result::pass("not mapped in the child");
    return result::fail("mprotect in the child failed: " + errno_string(errno));
  }
  std::size_t nonzero = 0;
  for (std::size_t i = 0; i < size; ++i) nonzero += data[i] != std::byte{0} ? 1 : 0;
  if (nonzero != 0) return result::fail(std::to_string(nonzero) + " non-zero bytes visible in the child");
  return result::pass("zeros in the child");
}

result fork_one(const std::string& backend, std::size_t size) {
  auto secret = make_factory(backend).create_random(size);
  const digest before = digest_of(secret);
  const auto* data = address_of(secret);
  const result view = run_child_check([&] { return child_view(data, size); });
  const result refused = run_child_check([&] {
    try {
      secret.with_bytes([](std::span<const std::byte>) {});
      return result::fail("with_bytes worked in the child");
    } catch (const error& e) {
      if (e.code_value() != errc::closed) return result::fail(std::string("with_bytes in the child: ") + e.what());
    }
    return result::pass("with_bytes refused in the child");
  });
  const auto closed = run_child([&] {
    secret.close();
    return secret.is_closed() ? 0 : 1;
  });
  const auto destroyed = run_child([&] {
    static Secret kept;  // destroyed by exit(), with the other static objects
    kept = std::move(secret);
    std::exit(0);  // NOLINT(concurrency-mt-unsafe): a forked, single-threaded child; exit() is what runs the static destructor under test
    return 0;
  });
  std::vector<std::pair<std::string, result>> parts;
  parts.emplace_back("pages", view);
  parts.emplace_back("access", refused);
  parts.emplace_back("close in child", closed.exited && closed.exit_code == 0 ? result::pass(closed.describe())
                                                                               : result::fail(closed.describe()));
  parts.emplace_back("destroyed at exit", destroyed.exited && destroyed.exit_code == 0
                                              ? result::pass(destroyed.describe())
                                              : result::fail(destroyed.describe()));
  const bool intact = !secret.is_closed() && digest_of(secret) == before;
  parts.emplace_back("parent", intact ? result::pass("secret intact") : result::fail("the parent's secret changed"));
  return combine(parts);
}

}  // namespace

result check_fork(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::hidden_from_fork_children)) return *no;
  return per_size([&](std::size_t size) { return fork_one(backend, size); });
}

namespace {

std::size_t vm_locked_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmLck:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

result memlock_exhaustion(const std::string& backend, bool locks_per_secret) {
  constexpr rlim_t limit = rlim_t{64} * 1024;
  if (!drop_cap_ipc_lock()) return result::skip("cannot drop CAP_IPC_LOCK (capset: " + errno_string(errno) + ")");
  const rlimit lim{limit, limit};
  if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0) return result::fail("setrlimit(RLIMIT_MEMLOCK) failed: " + errno_string(errno));
  set_page_cache_limit(0);  // cached pages stay locked by design: count only live secrets here
  auto factory = make_factory(backend);
  // The library's random-number generator locks its page on first use in
  // this (forked) process: before the baseline, like a backend's own state.
  (void)factory.create_random(32);
  const auto start = metrics();
  const std::size_t start_kb = vm_locked_kb();
  std::vector<Secret> held;
  std::vector<digest> digests;
  std::string message;
  for (int i = 0; i < 1000 && message.empty(); ++i) {
    const auto m = metrics();
    const std::size_t kb = vm_locked_kb();
    try {
      held.push_back(factory.create_random(32));
      digests.push_back(digest_of(held.back()));
    } catch (const error& e) {
      if (e.code_value() != errc::memlock_limit) {
        return result::fail(std::string("failed with ") + e.code().message() + " instead of memlock_limit: " + e.what());
      }
      message = e.what();
      const auto after = metrics();
      if (after.in_use != m.in_use || after.locked_bytes != m.locked_bytes || vm_locked_kb() != kb) {
        return result::fail("the failed creation leaked (metrics or VmLck changed)");
      }
    }
  }
  if (message.empty() && !locks_per_secret) {
    // Nothing is locked per secret: the limit is not what bounds it.
    if (metrics().locked_bytes != start.locked_bytes) return result::fail("secrets of this backend locked memory each");
    for (std::size_t i = 0; i < held.size(); ++i) {
      if (digest_of(held[i]) != digests[i]) return result::fail("a secret changed");
    }
    return result::pass(std::to_string(held.size()) +
                        " secrets of 32 B under a 64 KiB RLIMIT_MEMLOCK, none locking memory of its own (ciphertext "
                        "in unlocked arenas; only the shared scratch and key are locked)");
  }
  if (message.empty()) return result::fail("1000 secrets of 32 B fitted under a 64 KiB RLIMIT_MEMLOCK");
  if (held.empty()) return result::fail("not even one 32 B secret fitted under 64 KiB");
  if (message.find(std::to_string(limit)) == std::string::npos) {
    return result::fail("the memlock_limit message does not give the limit (" + std::to_string(limit) + ")");
  }
  for (std::size_t i = 0; i < held.size(); ++i) {
    if (digest_of(held[i]) != digests[i]) return result::fail("a secret created before the limit changed");
  }
  const std::size_t count = held.size();
  held.clear();
  const auto end = metrics();
  if (end.in_use != start.in_use || end.locked_bytes != start.locked_bytes || vm_locked_kb() != start_kb) {
    return result::fail("closing every secret did not return the locked memory (VmLck " + std::to_string(vm_locked_kb()) +
                        " kB, started at " + std::to_string(start_kb) + " kB)");
  }
  (void)factory.create_random(32);  // room again
  return result::pass(std::to_string(count) + " secrets of 32 B fitted under 64 KiB, then memlock_limit naming the limit; "
                                              "earlier secrets intact; nothing leaked (metrics, VmLck)");
}

}  // namespace

result check_memlock(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::locked)) return *no;
  const bool per_secret = description_of(backend).locks_per_secret;
  return run_child_check([&] { return memlock_exhaustion(backend, per_secret); });
}


}  // namespace securememory::proof
