// securememory proof: the table of checks, and the checks that need no core
// file: round trip, swap (smaps Locked), no access (SIGSEGV), ptrace
// visibility (/proc/PID/mem), fork, memlock exhaustion; plus the host's
// capabilities.
//
// Theory of operation: every check takes a backend name, uses only the
// public API (and lib/os/ through the wipe check), runs what may crash or
// change process limits in a forked child (run_child / run_child_check),
// and returns PASS / FAIL / SKIP with a detail made of counts, sizes and
// errno texts. The sizes are 32 bytes and 1 MiB.
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <securememory/error.hpp>
#include <securememory/metrics.hpp>
#include <securememory/page_cache.hpp>
#include <securememory/registry.hpp>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <sstream>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace securememory::proof {
namespace {

constexpr std::array<std::size_t, 2> sizes{32, std::size_t{1} << 20U};

std::size_t page() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

// One check per size of `sizes`, combined ("32 B: PASS ...; 1 MiB: ...").
template <class Check>
result per_size(Check&& check) {
  std::vector<std::pair<std::string, result>> parts;
  parts.reserve(sizes.size());
  for (const auto size : sizes) parts.emplace_back(size_label(size), check(size));
  return combine(parts);
}

const std::byte* address_of(const Secret& s) {
  return s.with_bytes([](std::span<const std::byte> b) { return b.data(); });
}

using digest = std::array<unsigned char, crypto_generichash_BYTES>;

digest digest_of(std::span<const std::byte> b) {
  digest d{};
  crypto_generichash(d.data(), d.size(), reinterpret_cast<const unsigned char*>(b.data()), b.size(), nullptr, 0);
  return d;
}

digest digest_of(const Secret& s) {
  return s.with_bytes([](std::span<const std::byte> b) { return digest_of(b); });
}

// ---- round trip --------------------------------------------------------------------

result round_trip(const std::string& backend, std::size_t size) {
  auto secret = make_factory(backend).create_random(size);
  const digest via_with_bytes = digest_of(secret);
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, crypto_generichash_BYTES);
  auto reader = secret.reader();
  std::vector<std::byte> chunk(4093);  // not a power of two: a partial last read
  std::size_t total = 0;
  for (std::size_t n = 0; (n = reader.read(chunk)) != 0;) {
    crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(chunk.data()), n);
    total += n;
  }
  sodium_memzero(chunk.data(), chunk.size());
  digest via_reader{};
  crypto_generichash_final(&state, via_reader.data(), via_reader.size());
  secret.close();
  if (total != size) return result::fail("the reader returned " + std::to_string(total) + " bytes");
  if (sodium_memcmp(via_with_bytes.data(), via_reader.data(), via_reader.size()) != 0) {
    return result::fail("with_bytes and the reader saw different bytes");
  }
  if (!secret.is_closed()) return result::fail("not closed after close()");
  return result::pass("with_bytes and reader agree");
}

result check_round_trip(const std::string& backend) {
  return per_size([&](std::size_t size) { return round_trip(backend, size); });
}

// ---- swap: smaps Locked --------------------------------------------------------------

// The mappings of /proc/self/smaps that intersect [lo, hi).
std::vector<smaps_mapping> mappings_in(std::uintptr_t lo, std::uintptr_t hi) {
  std::vector<smaps_mapping> out;
  for (auto& m : read_smaps()) {
    if (m.start < hi && lo < m.end) out.push_back(std::move(m));
  }
  return out;
}

// "" when every page holding [data, data+size) is in a VM_LOCKED mapping
// whose Locked count covers those pages; else what is wrong.
std::string locked_problem(const std::byte* data, std::size_t size) {
  const std::uintptr_t lo = reinterpret_cast<std::uintptr_t>(data) / page() * page();
  const std::uintptr_t hi = (reinterpret_cast<std::uintptr_t>(data) + size + page() - 1) / page() * page();
  const auto maps = mappings_in(lo, hi);
  std::uintptr_t covered = lo;
  for (const auto& m : maps) {
    if (m.start > covered) break;
    const std::size_t need_kb = (std::min(m.end, hi) - std::max(m.start, lo)) / 1024;
    if (!m.has_flag("lo")) return "a mapping holding the secret is not mlocked (no \"lo\" in VmFlags)";
    if (m.locked_kb < need_kb) {
      return "a mapping holding the secret has Locked " + std::to_string(m.locked_kb) + " kB, the secret's pages need " +
             std::to_string(need_kb) + " kB";
    }
    covered = m.end;
  }
  if (covered < hi) return "the secret's pages are not all mapped";
  return "";
}

// Backends whose plaintext exists only inside an access ("sealed": the
// stored form is ciphertext; with_bytes decrypts into a locked scratch
// that is wiped afterwards). For them the page-level checks apply to the
// scratch while it holds the plaintext, and "outside an access" means "the
// scratch no longer holds the secret", not "the address faults".
bool plaintext_only_during_access(const std::string& backend) { return backend == "sealed"; }

result check_swap(const std::string& backend) {
  std::vector<std::pair<std::string, result>> parts;
  if (plaintext_only_during_access(backend)) {
    auto factory = make_factory(backend);
    for (const auto size : sizes) {
      auto secret = factory.create_random(size);
      std::string problem;
      secret.with_bytes([&](std::span<const std::byte> b) { problem = locked_problem(b.data(), size); });
      secret.close();
      parts.emplace_back(size_label(size), problem.empty()
                                               ? result::pass("plaintext exists only inside with_bytes, and is Locked there")
                                               : result::fail("inside with_bytes: " + problem));
    }
    return combine(parts);
  }
  auto factory = make_factory(backend);
  for (const auto size : sizes) {
    auto secret = factory.create_random(size);
    const auto* data = address_of(secret);
    std::string problem;
    const auto at = [&](const char* when) {
      if (problem.empty()) {
        if (const auto p = locked_problem(data, size); !p.empty()) problem = std::string(when) + ": " + p;
      }
    };
    at("after create");
    secret.with_bytes([&](std::span<const std::byte>) { at("inside with_bytes"); });
    at("after with_bytes");
    {
      std::vector<std::byte> chunk(size / 2 + 1);
      auto reader = secret.reader();
      (void)reader.read(chunk);
      at("between two reads");
      (void)reader.read(chunk);
      sodium_memzero(chunk.data(), chunk.size());
    }
    at("after reading");
    secret.close();
    parts.emplace_back(size_label(size), problem.empty() ? result::pass("Locked after create, inside and after with_bytes, between and after reads")
                                                         : result::fail(problem));
  }
  return combine(parts);
}

// ---- no access ----------------------------------------------------------------------------

result check_no_access(const std::string& backend) {
  std::vector<std::pair<std::string, result>> parts;
  for (const auto size : sizes) {
    // Control: reading every byte inside with_bytes works.
    const auto control = run_child([&] {
      auto s = make_factory(backend).create_random(size);
      return s.with_bytes([](std::span<const std::byte> b) {
        unsigned x = 0;
        for (const auto& v : b) x += std::to_integer<unsigned>(*static_cast<const volatile std::byte*>(&v));
        return x == 0xFFFFFFFFU ? 1 : 0;
      });
    });
    // Probe: reading the first and the last byte outside it dies of SIGSEGV
    // (or, for a backend whose plaintext exists only during an access, the
    // memory there no longer holds the secret: the child exits 0 then, 3 if
    // it still reads the secret's bytes).
    std::vector<std::string> probes;
    bool ok = control.exited && control.exit_code == 0;
    if (plaintext_only_during_access(backend)) {
      const auto probe = run_child([&] {
        auto s = make_factory(backend).create_random(size);
        std::vector<std::byte> inside(size);
        const auto* p = s.with_bytes([&](std::span<const std::byte> b) {
          std::copy(b.begin(), b.end(), inside.begin());
          return b.data();
        });
        bool same = true;
        for (std::size_t i = 0; i < size && same; ++i) same = *static_cast<const volatile std::byte*>(p + i) == inside[i];
        sodium_memzero(inside.data(), inside.size());
        return same ? 3 : 0;
      });
      const bool gone = (probe.exited && probe.exit_code == 0) || (probe.signaled && probe.signal == SIGSEGV);
      const std::string detail = "inside with_bytes: " + control.describe() + ", the scratch after the access: " +
                                 (gone ? "no longer holds the secret (" : "STILL holds the secret (") + probe.describe() + ")";
      parts.emplace_back(size_label(size), ok && gone ? result::pass(detail) : result::fail(detail));
      continue;
    }
    for (const std::size_t at : {std::size_t{0}, size - 1}) {
      const auto probe = run_child([&] {
        auto s = make_factory(backend).create_random(size);
        const auto* p = address_of(s);
        volatile std::byte b = *static_cast<const volatile std::byte*>(p + at);
        (void)b;
        return 0;
      });
      ok = ok && probe.signaled && probe.signal == SIGSEGV;
      probes.push_back("byte " + std::to_string(at) + " outside: " + probe.describe());
    }
    std::string detail = "inside with_bytes: " + control.describe();
    for (const auto& p : probes) detail += ", " + p;
    parts.emplace_back(size_label(size), ok ? result::pass(detail) : result::fail(detail));
  }
  return combine(parts);
}

// ---- ptrace visibility: /proc/PID/mem ----------------------------------------------------------

// Whether root reading /proc/PID/mem is expected to see the bytes, per
// backend; empty for a backend with no documented expectation.
std::optional<bool> expected_readable_by_root(const std::string& backend) {
  if (backend == "protectedmemory" || backend == "memguard") return true;  // the limit of mprotect
  if (backend == "secretmem") return false;                                // memfd_secret: not even the kernel maps it
  return std::nullopt;
}

result ptrace_visibility(const std::string& backend, std::size_t size) {
  const secret_exchange exchange(size);
  holding_child child(exchange, backend);
  std::string seen;
  bool readable = false;
  if (child.ready()) {
    const int fd = open(("/proc/" + std::to_string(child.pid()) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      seen = "cannot open /proc/PID/mem: " + errno_string(errno);
    } else {
      std::vector<std::byte> buf(size);
      const ssize_t n = pread(fd, buf.data(), size, static_cast<off_t>(child.address()));
      const int err = errno;
      close(fd);
      if (n == static_cast<ssize_t>(size)) {
        auto given = exchange.given_bytes();
        readable = std::equal(buf.begin(), buf.end(), given.begin());
        seen = readable ? "readable by root: the secret's bytes" : "readable by root, but not the secret's bytes";
        sodium_memzero(given.data(), given.size());
      } else {
        seen = "not readable by root (" + (n < 0 ? errno_string(err) : "short read of " + std::to_string(n) + " B") + ")";
      }
      sodium_memzero(buf.data(), buf.size());
    }
  }
  const auto end = child.finish();
  if (!child.ready()) return result::fail("the child did not get ready (" + end.describe() + ")");
  const auto expected = expected_readable_by_root(backend);
  if (!expected) return result::pass(seen + " (no documented expectation for this backend)");
  if (*expected == readable) return result::pass(seen + (readable ? " (expected: mprotect does not stop ptrace)" : " (expected)"));
  return result::fail(seen + (*expected ? " (documented as readable: update docs/security-model.md)"
                                        : " (this backend must hide the bytes even from root)"));
}

result check_ptrace(const std::string& backend) {
  return per_size([&](std::size_t size) { return ptrace_visibility(backend, size); });
}

// ---- fork -----------------------------------------------------------------------------------------

// In a forked child: the secret's pages hold no non-zero byte (or are not
// mapped). Uses mprotect directly: the child is a probe, not the library.
result child_view(const std::byte* data, std::size_t size) {
  const std::uintptr_t lo = reinterpret_cast<std::uintptr_t>(data) / page() * page();
  const std::uintptr_t hi = (reinterpret_cast<std::uintptr_t>(data) + size + page() - 1) / page() * page();
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

result check_fork(const std::string& backend) {
  return per_size([&](std::size_t size) { return fork_one(backend, size); });
}

// ---- memlock exhaustion --------------------------------------------------------------------------

std::size_t vm_locked_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmLck:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

result memlock_exhaustion(const std::string& backend) {
  constexpr rlim_t limit = rlim_t{64} * 1024;
  if (!drop_cap_ipc_lock()) return result::skip("cannot drop CAP_IPC_LOCK (capset: " + errno_string(errno) + ")");
  const rlimit lim{limit, limit};
  if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0) return result::fail("setrlimit(RLIMIT_MEMLOCK) failed: " + errno_string(errno));
  set_page_cache_limit(0);  // cached pages stay locked by design: count only live secrets here
  auto factory = make_factory(backend);
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
  if (message.empty() && plaintext_only_during_access(backend)) {
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

result check_memlock(const std::string& backend) {
  return run_child_check([&] { return memlock_exhaustion(backend); });
}

// ---- the table ----------------------------------------------------------------------------------

constexpr std::array<check, 10> table{{
    {"round-trip", "create_random, with_bytes and reader agree, close", &check_round_trip},
    {"core-dump", "a kernel core dump (idle, inside with_bytes, after close) holds no secret byte", &check_core_dumps},
    {"gcore", "a gcore snapshot of a live process holds no secret byte", &check_gcore},
    {"swap", "the secret's pages are Locked (smaps) for its whole life", &check_swap},
    {"wipe", "the secret's bytes are zero when its pages are unmapped", &check_wiping},
    {"no-access", "reading outside with_bytes dies of SIGSEGV; inside works", &check_no_access},
    {"ptrace", "what root sees through /proc/PID/mem, against the documented expectation", &check_ptrace},
    {"fork", "a forked child sees no secret byte and can close or destroy the secret", &check_fork},
    {"memlock", "RLIMIT_MEMLOCK exhaustion without CAP_IPC_LOCK is memlock_limit, leak-free", &check_memlock},
    {"envelope", "envelope decryption through create_with leaves no key byte in a core (memory, registers); control finds heap copies", &check_envelope},
}};

std::string capability_ipc_lock() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> 14U) & 1U ? "yes" : "no";
  }
  return "unknown";
}

std::string limit_text(rlim_t v) { return v == RLIM_INFINITY ? "unlimited" : std::to_string(v) + " bytes"; }

std::string memfd_secret_status() {
#ifdef SYS_memfd_secret
  const long fd = syscall(SYS_memfd_secret, 0U);
#else
  const long fd = syscall(447, 0U);
#endif
  if (fd >= 0) {
    close(static_cast<int>(fd));
    return "yes";
  }
  const int err = errno;
  if (err == ENOSYS) return "no (ENOSYS: kernel older than 5.14 or built without CONFIG_SECRETMEM)";
  if (err == EINVAL || err == EOPNOTSUPP) return "no (disabled: boot with secretmem.enable=1)";
  return "no (" + errno_string(err) + ")";
}

}  // namespace

std::span<const std::size_t> secret_sizes() { return sizes; }

std::span<const check> all_checks() { return table; }

const check* find_check(std::string_view name) {
  for (const auto& c : table) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::vector<std::pair<std::string, std::string>> host_capabilities() {
  rlimit memlock{};
  rlimit core{};
  getrlimit(RLIMIT_MEMLOCK, &memlock);
  getrlimit(RLIMIT_CORE, &core);
  utsname u{};
  uname(&u);
  const auto or_unreadable = [](const std::string& s) { return s.empty() ? std::string("(unreadable)") : s; };
  const std::string yama = first_line("/proc/sys/kernel/yama/ptrace_scope");
  const std::string gcore = gcore_path();
  __builtin_cpu_init();
  const std::string vectors = __builtin_cpu_supports("avx512f") ? "AVX-512 (zmm0-31 scrubbed)"
                              : __builtin_cpu_supports("avx")   ? "AVX (ymm0-15 scrubbed)"
                                                                : "SSE (xmm0-15 scrubbed)";
  return {
      {"kernel", std::string(u.sysname) + " " + u.release + " " + u.machine},
      {"RLIMIT_MEMLOCK", "soft " + limit_text(memlock.rlim_cur) + ", hard " + limit_text(memlock.rlim_max)},
      {"CAP_IPC_LOCK", capability_ipc_lock()},
      {"RLIMIT_CORE", "soft " + limit_text(core.rlim_cur) + ", hard " + limit_text(core.rlim_max)},
      {"core_pattern", or_unreadable(first_line("/proc/sys/kernel/core_pattern"))},
      {"core_uses_pid", or_unreadable(first_line("/proc/sys/kernel/core_uses_pid"))},
      {"suid_dumpable", or_unreadable(first_line("/proc/sys/fs/suid_dumpable"))},
      {"yama ptrace_scope", yama.empty() ? "not present (no Yama LSM)" : yama},
      {"memfd_secret", memfd_secret_status()},
      {"gcore", gcore.empty() ? "not installed (apt-get install gdb)" : gcore},
      {"vector registers", vectors},
      {"page size", std::to_string(sysconf(_SC_PAGESIZE)) + " bytes"},
      {"sanitizer build", sanitizer_limit().empty() ? "no" : "yes (core-dump and gcore checks skip)"},
  };
}

}  // namespace securememory::proof
