// Test support: forked children, fault injection, /proc/self/smaps, metrics.
#pragma once

#include <securememory/securememory.hpp>

#include "os/os.hpp"
#include "proof/proof.hpp"
#include "proc-status.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <sys/mman.h>

namespace test {

// ---- metrics --------------------------------------------------------------

/// Checks that in_use and locked_bytes are back to where they were.
class metrics_guard {
 public:
  metrics_guard() : before_(securememory::metrics()) {}
  void check() const {
    const auto now = securememory::metrics();
    CHECK(now.in_use == before_.in_use);
    CHECK(now.locked_bytes == before_.locked_bytes);
  }
  [[nodiscard]] const securememory::metrics_snapshot& before() const { return before_; }

 private:
  securememory::metrics_snapshot before_;
};

#define SM_CAT2(a, b) a##b
#define SM_CAT(a, b) SM_CAT2(a, b)
/// TEST_CASE that also checks that the metrics return to their starting
/// values when the body completes.
#define SM_TEST(name, tags) SM_TEST_IMPL(name, tags, SM_CAT(sm_test_body_, __LINE__))
#define SM_TEST_IMPL(name, tags, fn) \
  static void fn();                  \
  TEST_CASE(name, tags) {            \
    const test::metrics_guard guard; \
    fn();                            \
    guard.check();                   \
  }                                  \
  static void fn()

// ---- page cache --------------------------------------------------------------

/// Sets the page cache's bound for a scope and restores it after. Tests of
/// the uncached system-call paths (counted mlock/munmap) pin it to 0.
class page_cache_limit {
 public:
  explicit page_cache_limit(std::size_t bytes) : previous_(securememory::set_page_cache_limit(bytes)) {}
  ~page_cache_limit() { securememory::set_page_cache_limit(previous_); }
  page_cache_limit(const page_cache_limit&) = delete;
  page_cache_limit& operator=(const page_cache_limit&) = delete;

 private:
  std::size_t previous_;
};

/// Empties every page cache (bound 0), then sets the bound for a scope; the
/// bound in force before is restored at the end.
struct fresh_page_cache {
  explicit fresh_page_cache(std::size_t bytes) : off(0), on(bytes) {}
  page_cache_limit off;
  page_cache_limit on;
};

// ---- forked children ------------------------------------------------------

struct child_result {
  bool exited = false;
  int exit_code = -1;
  bool signaled = false;
  int signal = 0;
  [[nodiscard]] std::string describe() const;
};

/// Runs fn in a forked child with core dumps off and default signal
/// dispositions for SIGSEGV/SIGBUS/SIGABRT. The child exits with fn's return
/// value; an escaping securememory::error exits with 100 + its errc, any
/// other exception with 99.
child_result run_in_child(const std::function<int()>& fn);

/// Exit code a child uses to report an escaping securememory::error.
constexpr int exit_code_for(securememory::errc e) { return 100 + static_cast<int>(e); }

/// In the calling process: removes CAP_IPC_LOCK from the effective and
/// permitted sets. Returns false on failure. Use only in a forked child.
bool drop_cap_ipc_lock();

// ---- fault injection through lib/os/ ---------------------------------------

/// Makes `target` fail with `err` on its calls number skip, skip+stride,
/// skip+2*stride, ... (counting from 0), `times` of them, while alive.
class fault_injector {
 public:
  fault_injector(securememory::detail::os::call target, int err, int skip = 0, int times = 1, int stride = 1);
  ~fault_injector();
  fault_injector(const fault_injector&) = delete;
  fault_injector& operator=(const fault_injector&) = delete;
  /// Calls of `target` seen so far.
  [[nodiscard]] int seen() const { return seen_.load(); }
  /// Failures injected so far.
  [[nodiscard]] int injected() const { return injected_.load(); }
  /// Calls of any kind seen so far (counted whether or not they failed).
  [[nodiscard]] int calls(securememory::detail::os::call c) const { return counts_[static_cast<int>(c)].load(); }

 private:
  static int hook(securememory::detail::os::call c, void* context) noexcept;
  securememory::detail::os::call target_;
  int err_;
  int skip_;
  int times_;
  int stride_;
  std::atomic<int> seen_{0};
  std::atomic<int> injected_{0};
  std::atomic<int> counts_[static_cast<int>(securememory::detail::os::call::count_)]{};
};

/// Counts calls through lib/os/ without failing any.
class call_counter : public fault_injector {
 public:
  call_counter() : fault_injector(securememory::detail::os::call::count_, 0, 0, 0) {}
};

// ---- /proc/self/smaps -------------------------------------------------------

/// One mapping of /proc/self/smaps (the proof library's parser).
using mapping_info = securememory::proof::smaps_mapping;

/// The mapping of /proc/self/smaps that contains addr, if any.
std::optional<mapping_info> find_mapping(const void* addr);

// ---- violations -------------------------------------------------------------

/// Restores the default violation handler and policy (abort) when a test ends.
struct violation_settings_guard {
  violation_settings_guard() = default;
  violation_settings_guard(const violation_settings_guard&) = delete;
  violation_settings_guard& operator=(const violation_settings_guard&) = delete;
  ~violation_settings_guard() {
    securememory::set_violation_handler(nullptr);
    securememory::set_violation_policy(securememory::violation_policy::abort);
  }
};

// ---- a user backend -----------------------------------------------------------

/// A user backend on plain heap memory ("test-heap"): no locking, no
/// protection. Counts what the state machine asks of it.
class heap_backend final : public securememory::backend {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "test-heap"; }
  [[nodiscard]] securememory::region allocate(std::size_t size) override;
  std::optional<securememory::ViolationKind> protect(securememory::region& r, securememory::access a) override;
  void release(securememory::region& r) override;
  int allocations = 0;
  int protects = 0;
  int releases = 0;
  securememory::access last_access = securememory::access::read_write;
};

// ---- sanitizers ---------------------------------------------------------------

/// The sanitizer this binary was built with: "AddressSanitizer",
/// "ThreadSanitizer", or nullptr.
constexpr const char* sanitizer() {
#if defined(__SANITIZE_ADDRESS__)
  return "AddressSanitizer";
#elif defined(__SANITIZE_THREAD__)
  return "ThreadSanitizer";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return "AddressSanitizer";
#elif __has_feature(thread_sanitizer)
  return "ThreadSanitizer";
#else
  return nullptr;
#endif
#else
  return nullptr;
#endif
}

/// In a test body: when built with a sanitizer, marks the test case skipped
/// with the reason (TAP "# SKIP", counted as skipped) and returns.
#define SM_SKIP_UNDER_SANITIZER(reason)                                  \
  do {                                                                   \
    if (test::sanitizer() != nullptr) {                                  \
      WARN("skipped under " << test::sanitizer() << ": " << (reason));   \
      return;                                                            \
    }                                                                    \
  } while (0)

/// True when built with ThreadSanitizer.
constexpr bool built_with_tsan() {
  const char* s = sanitizer();
  return s != nullptr && s[0] == 'T';
}

/// In a test body: under ThreadSanitizer, marks the test case skipped with
/// the reason and returns. For tests that fork while other threads run:
/// TSan does not support that (its runtime's own locks and thread states
/// are copied mid-use; children hang in it or report races with threads
/// that do not exist there). The plain and ASan suites prove those cases.
#define SM_SKIP_UNDER_TSAN(reason)                                            \
  do {                                                                        \
    if (test::built_with_tsan()) {                                          \
      WARN("skipped under ThreadSanitizer: " << (reason));                  \
      return;                                                                 \
    }                                                                         \
  } while (0)

// ---- platform (lib/os/) --------------------------------------------------------

/// What this build's platform layer provides beyond POSIX (lib/os/os.hpp).
/// The posix_only build provides none of it: tests of those guarantees
/// skip there (SM_SKIP_UNLESS), and checks of the pages expect their
/// absence (no "dd" or "wf" in smaps), so that a build claiming more than
/// it does fails.
inline bool dump_exclusion_here() { return securememory::detail::os::can_exclude_from_core_dumps(); }
inline bool wipe_on_fork_here() {
  return securememory::detail::os::fork_hiding() == securememory::detail::os::fork_rule::wipe;
}
/// A flag every mapping holding a secret has in smaps in this build ("dd",
/// or "lo" where there is no dump exclusion), to tell that one is gone.
inline const char* secret_page_flag() { return dump_exclusion_here() ? "dd" : "lo"; }
inline bool map_count_here() { return securememory::detail::os::max_map_count() >= 0; }
inline bool lock_probe_here() { return securememory::detail::os::can_lock_on_fault(); }
inline bool tracing_control_here() { return securememory::detail::os::get_traceable_call() != nullptr; }

/// In a test body: when `available` is false in this build (the posix_only
/// build, or a platform without the feature), marks the test case skipped
/// with the reason (TAP "# SKIP", counted as skipped) and returns.
#define SM_SKIP_UNLESS(available, reason)                                                                \
  do {                                                                                                   \
    if (!(available)) {                                                                                  \
      WARN("skipped: " << (reason) << " (lib/os/ platform: " << securememory::detail::os::platform_name() \
                       << ")");                                                                          \
      return;                                                                                            \
    }                                                                                                    \
  } while (0)

// ---- misc -------------------------------------------------------------------

/// True for backends that declare they keep a secret encrypted at rest
/// (Guarantees::encrypted_at_rest: sealed) and open it into a locked,
/// dump-excluded scratch buffer that stays mapped read-write and is wiped
/// when the access ends, instead of pages that fault outside an access. Tests of "faults outside/on write" check the honest
/// equivalent for them: nothing but zeros there afterwards, writes never
/// reach the stored secret.
bool plaintext_in_scratch(std::string_view backend);

/// True when all n bytes at p are zero (p must be readable).
bool all_zero_at(const std::byte* p, std::size_t n);

/// A buffer of n bytes filled with a recognisable, non-zero pattern.
std::vector<std::byte> pattern(std::size_t n, unsigned seed = 1);

/// Address of a secret's first byte (read inside with_bytes, used outside).
const std::byte* address_of(const securememory::Secret& s);

/// Flips the bits of `mask` in the byte just in front of `data` (memguard's
/// canary), as a stray write would: its page is made writable for the
/// write, then given `protection` back (PROT_NONE for an idle secret,
/// PROT_READ inside with_bytes). False when mprotect fails.
bool flip_byte_before(const std::byte* data, int protection, unsigned char mask = 1) noexcept;

/// flip_byte_before(address_of(s), PROT_NONE) for an idle memguard secret;
/// the test fails when it cannot.
void corrupt_canary(const securememory::Secret& s, unsigned char mask = 1);

/// Reads n bytes at addr through /proc/self/mem (works on no-access pages
/// for root, as on this machine). Fails the test if the read fails.
std::vector<std::byte> read_process_memory(const void* addr, std::size_t n);

/// Catches a securememory::error thrown by fn and returns its errc.
std::optional<securememory::errc> error_of(const std::function<void()>& fn);

/// What a caught securememory::error carried.
struct caught_error {
  securememory::errc code{};
  int sys_errno = 0;
  std::string what;
};

/// Catches a securememory::error thrown by fn and returns all it carried.
std::optional<caught_error> caught(const std::function<void()>& fn);

}  // namespace test
