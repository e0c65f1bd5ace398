// securememory proof: the table of checks (one per guarantee a backend can
// declare, plus a round trip every backend must pass), the helpers they
// share, and the host's capabilities.
//
// Theory of operation: every check takes a backend name, reads what the
// backend declares (description_of: its own description, never a table of
// names here), proves a declared guarantee on the real kernel (PASS / FAIL),
// or reports one not declared as N/A, and SKIPs what this host or build
// cannot run. Checks use only the public API (and lib/os/ through the wipe
// check), run what may crash or change process limits in a forked child,
// and report counts, sizes and errno texts, never bytes. The sizes are 32
// bytes and 1 MiB. A user's registered backend is proven like the
// built-ins.
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include "internal.hpp"
#include "os/os.hpp"

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

// ---- the table ----------------------------------------------------------------------------------

constexpr std::array<check, 15> table{{
    {"round-trip", "create_random, with_bytes and reader agree, close", &check_round_trip, std::nullopt},
    {"core-dump", "a kernel core dump (idle, inside with_bytes, after close) holds no secret byte", &check_core_dumps,
     Guarantee::excluded_from_core_dumps},
    {"gcore", "a gcore snapshot of a live process holds no secret byte", &check_gcore, Guarantee::excluded_from_core_dumps},
    {"envelope", "decrypting records with create_with (examples/envelope.hpp) leaves no key byte in a core, memory or "
     "saved registers; a control with heap copies is found", &check_envelope, Guarantee::excluded_from_core_dumps},
    {"swap", "the secret's pages are Locked (smaps) for its whole life", &check_swap, Guarantee::locked},
    {"memlock", "RLIMIT_MEMLOCK exhaustion without CAP_IPC_LOCK is memlock_limit, leak-free", &check_memlock,
     Guarantee::locked},
    {"wipe", "the secret's bytes are zero when its pages are unmapped", &check_wiping, Guarantee::wiped_on_release},
    {"no-access", "reading outside with_bytes dies of SIGSEGV; inside works", &check_no_access,
     Guarantee::no_access_while_idle},
    {"at-rest", "root reading all of a process's memory finds no piece of an idle secret", &check_at_rest,
     Guarantee::encrypted_at_rest},
    {"ptrace", "root cannot read the secret through /proc/PID/mem", &check_ptrace, Guarantee::outside_direct_map},
    {"key", "root cannot read the key of the ciphertext through /proc/PID/mem; it is read-only", &check_key,
     Guarantee::key_outside_direct_map},
    {"guard-pages", "a read right past the end of the secret's memory dies of SIGSEGV", &check_guard_pages,
     Guarantee::guard_pages},
    {"canary", "a write just in front of the secret goes to the handler, then quarantine or SIGABRT", &check_canary,
     Guarantee::canary},
    {"tamper", "a changed stored form goes to the handler, then quarantine or SIGABRT", &check_tamper,
     Guarantee::tamper_detected},
    {"fork", "a forked child sees no secret byte and can close or destroy the secret", &check_fork,
     Guarantee::hidden_from_fork_children},
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

// What this build's lib/os/ provides beyond POSIX (docs/design.md, "Platforms").
std::string platform_status() {
  namespace os = detail::os;
  const auto yes_no = [](bool b) { return b ? "yes" : "no"; };
  const os::fork_rule fork = os::fork_hiding();
  return std::string(os::platform_name()) + " (dump exclusion: " + yes_no(os::can_exclude_from_core_dumps()) +
         ", fork rule: " + (fork == os::fork_rule::wipe ? "wipe" : fork == os::fork_rule::drop ? "drop" : "none") +
         ", mlock2: " + yes_no(os::can_lock_on_fault()) + ", tracing control: " +
         yes_no(os::get_traceable_call() != nullptr) + ", map count: " + yes_no(os::max_map_count() >= 0) +
         ", secretmem built: " + yes_no(SECUREMEMORY_HAVE_SECRETMEM != 0) + ")";
}

}  // namespace

std::span<const std::size_t> secret_sizes() { return sizes; }

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

const std::byte* address_of(const Secret& s) {
  const std::byte* at = nullptr;
  s.with_bytes([&](std::span<const std::byte> b) { at = b.data(); });  // the address, not the bytes: it leaves the call
  return at;
}

BackendDescription description_of(const std::string& backend) {
  return detail::backend_of(make_factory(backend)).describe();
}

std::optional<result> undeclared(const std::string& backend, Guarantee g) {
  if (has(description_of(backend).provides, g)) return std::nullopt;
  return result::not_provided(backend + " does not declare " + std::string(to_string(g)));
}

std::string child_report::text() {
  pipe_.close_write();
  std::string out;
  std::array<char, 256> buf{};
  for (ssize_t n; (n = ::read(pipe_.read_fd, buf.data(), buf.size())) > 0;) out.append(buf.data(), static_cast<std::size_t>(n));
  return out;
}

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
      {"lib/os/ platform", platform_status()},
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
