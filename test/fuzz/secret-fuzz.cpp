// libFuzzer harness: random sequences of operations on secrets of every
// registered backend, with random system-call failures injected through the
// lib/os/ fault hook, checked against a model after every step.
//
// Theory of operation. The input is read front to back as a program: each
// operation is a fault byte (optionally arming one injected failure: which
// lib/os/ call, which errno of ENOMEM/EPERM/EAGAIN/EINTR, after how many
// successful calls, how many times) followed by an opcode and its operands.
// Operations: create, create_random (including size 0, SIZE_MAX and sizes
// around the page-rounding overflow), with_bytes (plain, callback that
// throws, nested, close or destroy from inside the callback, reading another
// secret inside), reader open and reads of random sizes (including empty),
// verify (when Secret::verify exists), close, double close, move, swap,
// destroy, and make_factory with arbitrary names.
//
// The model knows each secret's bytes, size, backend and whether it is
// closed, and the expected metrics. After every step it checks:
//   - the bytes read equal the bytes stored; a created source is wiped on
//     success and untouched on failure;
//   - every failure is a securememory::error whose errc is the one the
//     injected call maps to (mmap -> out_of_memory, mlock -> memlock_limit,
//     mprotect/madvise -> protection_failed, munmap/munlock ->
//     release_failed; calls this harness does not know may give any
//     resource errc), whose sys_errno() is the injected errno, and which
//     comes only when a failure was injected (or the size is invalid);
//   - closed / reentrant_close / invalid_size / unknown_backend exactly where
//     the model predicts them, and no other exception type ever escapes;
//   - metrics: allocated, in_use and locked_bytes exact, failures within the
//     bounds the injected failures allow;
//   - nothing reaches a log line or an exception message that could be a
//     secret byte (all secret bytes have the high bit set; messages must be
//     ASCII);
//   - each backend's release: protectedmemory and secretmem report every
//     injected failure of an explicit close, memguard's never reaches an
//     injected munlock/munmap (sodium_free), sealed's never throws;
//   - after each input: every handle closed, metrics back to the start,
//     VmLck (the kernel's count of locked memory) back to the start plus
//     what the library keeps (page cache, sealed's scratch slabs) plus
//     memfd_secret arenas left mapped by a reported munmap failure.
// Leaks of heap memory are caught by LeakSanitizer (libFuzzer runs it).
// A violated invariant prints which one (never secret bytes) and aborts.
#include <securememory/securememory.hpp>

#include "../proc-status.hpp"
#include "backends/sealed.hpp"
#include "os/os.hpp"


#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using securememory::errc;
using securememory::Secret;
namespace os = securememory::detail::os;
using call = os::call;

constexpr int call_count = static_cast<int>(call::count_);
constexpr std::size_t size_max = std::numeric_limits<std::size_t>::max();

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "secret-fuzz: invariant violated (line %d): %s\n", line, what);
  std::abort();
}
#define EXPECT(cond)                         \
  do {                                       \
    if (!(cond)) violated(#cond, __LINE__);  \
  } while (0)

// ---- input ------------------------------------------------------------------

// Reads the input front to back; past the end every value is 0.
class input {
 public:
  input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  [[nodiscard]] bool done() const { return pos_ >= size_; }
  std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::uint16_t u16() {
    const unsigned low = byte();
    const unsigned high = byte();
    return static_cast<std::uint16_t>(low | (high << 8U));
  }
  std::string text(std::size_t n) {
    std::string s;
    for (std::size_t i = 0; i < n && !done(); ++i) s.push_back(static_cast<char>(byte()));
    return s;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// ---- fault injection --------------------------------------------------------

constexpr std::array<int, 4> injected_errnos{ENOMEM, EPERM, EAGAIN, EINTR};
// Each injected munmap failure really leaks a mapping (the library cannot
// give back what the kernel refused to take). Past this many per process
// munmap is let through, so a long session does not exhaust vm.max_map_count.
constexpr int max_munmap_failures = 4096;
// A secretmem arena whose munmap failed stays mapped and locked (see
// finish()); past this many leaked locked bytes per process munmap is let
// through too.
constexpr std::int64_t max_leaked_locked_bytes = std::int64_t{64} << 20U;

struct fault_plan {
  int target = -1;  // index of the call to fail, -1 for none
  int err = 0;
  int skip = 0;   // calls of target let through first
  int times = 0;  // then this many fail
  int seen = 0;
  int count = 0;  // failures injected during the current operation
  std::array<call, 16> calls{};
  std::array<int, 16> errs{};
  int munmap_failures = 0;  // per process
  std::int64_t leaked_locked_bytes = 0;  // per process: secretmem arenas left mapped by injected munmap failures

  void arm(int t, int e, int s, int n) {
    target = t, err = e, skip = s, times = n, seen = 0, count = 0;
  }
  void disarm() { target = -1, count = 0; }
  [[nodiscard]] bool injected_errno(int e) const {
    for (int i = 0; i < count && i < 16; ++i) {
      if (errs[static_cast<std::size_t>(i)] == e) return true;
    }
    return false;
  }
};
fault_plan plan;

// What the session exercised, printed at exit: proof that the failure paths
// were reached, not just the happy ones.
struct totals {
  std::uint64_t steps = 0;
  std::uint64_t injected = 0;
  std::array<std::uint64_t, 16> by_errc{};
  std::uint64_t callback_exceptions = 0;
  std::uint64_t leaked_inputs = 0;  // inputs that left a secretmem arena mapped (reported munmap failure)
};
totals stats;

void print_totals() {
  std::fprintf(stderr, "secret-fuzz: %llu steps, %llu injected failures, %llu callback exceptions; errors by errc:",
               static_cast<unsigned long long>(stats.steps), static_cast<unsigned long long>(stats.injected),
               static_cast<unsigned long long>(stats.callback_exceptions));
  for (std::size_t i = 1; i < stats.by_errc.size(); ++i) {
    if (stats.by_errc[i] != 0) {
      std::fprintf(stderr, " %s=%llu", securememory::category().message(static_cast<int>(i)).c_str(),
                   static_cast<unsigned long long>(stats.by_errc[i]));
    }
  }
  std::fprintf(stderr, "; %llu inputs left a secretmem arena mapped (%lld bytes)\n",
               static_cast<unsigned long long>(stats.leaked_inputs), static_cast<long long>(plan.leaked_locked_bytes));
}

int fault_hook(call c, void* /*context*/) noexcept {
  if (static_cast<int>(c) != plan.target) return 0;
  const int n = plan.seen++;
  if (n < plan.skip || n >= plan.skip + plan.times) return 0;
  if (std::string_view(os::call_name(c)) == "munmap" &&
      (plan.leaked_locked_bytes > max_leaked_locked_bytes || plan.munmap_failures++ >= max_munmap_failures)) {
    return 0;
  }
  if (plan.count < 16) {
    plan.calls[static_cast<std::size_t>(plan.count)] = c;
    plan.errs[static_cast<std::size_t>(plan.count)] = plan.err;
  }
  ++plan.count;
  return plan.err;
}

// Errcs an injected failure of call c may produce in a creation / an access /
// a close. Calls this harness does not know (added by later backends) may
// produce any resource errc.
bool resource_errc(errc e) {
  return e == errc::out_of_memory || e == errc::memlock_limit || e == errc::protection_failed ||
         e == errc::backend_unavailable || e == errc::release_failed;
}
bool errc_fits_call(call c, int err, errc e) {
  const std::string_view name = os::call_name(c);
  // secretmem: the kernel charges a memfd_secret mapping to RLIMIT_MEMLOCK
  // and refuses it with EAGAIN.
  if (name == "mmap") return e == errc::out_of_memory || (e == errc::memlock_limit && err == EAGAIN);
  if (name == "mlock") return e == errc::memlock_limit;
  if (name == "madvise") return e == errc::protection_failed;
  // secretmem: a slot wiped at release whose PROT_NONE then fails is a
  // release failure (the secret is gone, the pages stay writable zeros).
  if (name == "mprotect") return e == errc::protection_failed || e == errc::release_failed;
  if (name == "munmap" || name == "munlock") return e == errc::release_failed;
  return resource_errc(e);
}
bool errc_fits_injected(errc e) {
  for (int i = 0; i < plan.count && i < 16; ++i) {
    const auto k = static_cast<std::size_t>(i);
    if (errc_fits_call(plan.calls[k], plan.errs[k], e)) return true;
  }
  return false;
}

// ---- logging ----------------------------------------------------------------

bool ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80U; });
}

// Secret bytes all have the high bit set, so an ASCII-only log never held one.
void checking_sink(securememory::log_level /*level*/, std::string_view message) { EXPECT(ascii(message)); }

// ---- locked memory outside the metrics -------------------------------------

// Address intervals [first, second) of this process's memfd_secret mappings
// ("/secretmem (deleted)" in /proc/self/maps), sorted and merged, so that a
// mapping split by mprotect counts as one.
using intervals = std::vector<std::pair<std::uintptr_t, std::uintptr_t>>;
bool tracking_secretmem = false;  // secretmem is fuzzed: account for its mappings

intervals secretmem_mappings() {
  intervals out;
  std::ifstream in("/proc/self/maps");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" /secretmem") == std::string::npos) continue;
    unsigned long lo = 0;
    unsigned long hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2) continue;
    if (!out.empty() && out.back().second == lo) {
      out.back().second = hi;
    } else {
      out.emplace_back(lo, hi);
    }
  }
  return out;
}

std::int64_t length_of(const intervals& a) {
  std::int64_t n = 0;
  for (const auto& [lo, hi] : a) n += static_cast<std::int64_t>(hi - lo);
  return n;
}

// Bytes covered by both (each sorted and disjoint).
std::int64_t overlap(const intervals& a, const intervals& b) {
  std::int64_t n = 0;
  std::size_t i = 0;
  std::size_t j = 0;
  while (i < a.size() && j < b.size()) {
    const auto lo = std::max(a[i].first, b[j].first);
    const auto hi = std::min(a[i].second, b[j].second);
    if (lo < hi) n += static_cast<std::int64_t>(hi - lo);
    if (a[i].second < b[j].second) {
      ++i;
    } else {
      ++j;
    }
  }
  return n;
}

// The memfd_secret mappings when the current input started: read after the
// warm-up, then again only after an input that changed the locked memory.
intervals* secretmem_at_start = nullptr;  // lives for the process

// Locked bytes of sealed's scratch slabs made so far (each slab is 8 pages,
// the first, its bitmap, not locked). Slabs are kept for the thread (and
// then the next thread) by design: growth is legitimate, shrinking is not.
std::int64_t sealed_scratch_locked() {
  return static_cast<std::int64_t>(securememory::detail::sealed_stats().scratch_slabs * 7 * os::page_size());
}

// ---- the model --------------------------------------------------------------

struct model_secret {
  std::string backend;
  std::size_t size = 0;
  std::vector<std::byte> bytes;
  std::uint64_t locked = 0;  // locked_bytes this secret added
  bool closed = false;
};

struct slot {
  Secret handle;
  model_secret* m = nullptr;  // nullptr: empty handle
};

struct reader_slot {
  std::optional<securememory::Reader> r;
  model_secret* m = nullptr;
  std::size_t offset = 0;
};

// Backends available on this host (made at start-up), fuzzed or not.
std::vector<std::string>* available = nullptr;

struct backend_entry {
  std::string name;
  securememory::SecretFactory factory;
};

std::vector<backend_entry>* backends = nullptr;

// Thrown by callbacks; must come back out of with_bytes unchanged.
struct callback_error {
  int tag;
};

struct outcome {
  bool threw = false;
  errc code{};
  int sys_errno = 0;
  std::string what;
  bool callback_threw = false;
};

template <class F>
outcome attempt(F&& f) {
  outcome o;
  try {
    f();
  } catch (const securememory::error& e) {
    o.threw = true;
    o.code = e.code_value();
    o.sys_errno = e.sys_errno();
    o.what = e.what();
  } catch (const callback_error& e) {
    EXPECT(e.tag == 42);
    o.callback_threw = true;
  } catch (...) {
    violated("an exception that is not a securememory::error escaped", __LINE__);
  }
  return o;
}

template <class S>
concept has_verify = requires(const S& s) { s.verify(); };

long vm_locked_kb() { return test::proc_status_kb("VmLck"); }

class run {
 public:
  explicit run(input& in)
      : in_(in),
        start_(securememory::metrics()),
        start_locked_kb_(vm_locked_kb()),
        start_scratch_(sealed_scratch_locked()) {}

  void execute() {
    for (int step = 0; step < 64 && !in_.done(); ++step) {
      arm_from_input();
      const auto before = securememory::metrics();
      const outcome o = operation();
      ++stats.steps;
      stats.injected += static_cast<std::uint64_t>(plan.count);
      for (int i = 0; i < plan.count && i < 16; ++i) {
        if (std::string_view(os::call_name(plan.calls[static_cast<std::size_t>(i)])) == "munmap") ++munmap_injected_;
      }
      if (o.threw) ++stats.by_errc[static_cast<std::size_t>(o.code) % stats.by_errc.size()];
      if (o.callback_threw) ++stats.callback_exceptions;
      check_failure(o);
      check_metrics(before, o);
      plan.disarm();
      check_handles();
    }
    finish();
  }

 private:
  // ---- one step ----

  void arm_from_input() {
    const std::uint8_t f = in_.byte();
    if (f % 4 == 0) return;
    const int target = in_.byte() % call_count;
    const int err = injected_errnos[in_.byte() % injected_errnos.size()];
    plan.arm(target, err, (f >> 2U) & 3U, 1 + ((f >> 4U) & 1U));
  }

  // Which failure, if any, the model allows for the outcome of this step.
  // Steps set expect_ to the non-resource errc they predict.
  void check_failure(const outcome& o) {
    if (!o.threw) {
      if (expect_.has_value() && !expect_any_) {
        std::fprintf(stderr, "secret-fuzz: operation %d succeeded where errc %d was expected\n", last_op_,
                     static_cast<int>(*expect_));
      }
      EXPECT(!expect_.has_value() || expect_any_);
      return;
    }
    if (expect_ && o.code == *expect_) return;
    // A huge size: the rounding overflowed (the threshold depends on the
    // backend's overhead) or the kernel itself refused the mapping.
    if (huge_ && (o.code == errc::invalid_size || o.code == errc::out_of_memory)) return;
    if (o.code == errc::invalid_size) violated("invalid_size for a valid size", __LINE__);
    if (!resource_errc(o.code) || plan.count == 0 || !errc_fits_injected(o.code)) {
      std::fprintf(stderr, "secret-fuzz: operation %d failed with errc %d; injected:", last_op_, static_cast<int>(o.code));
      for (int i = 0; i < plan.count && i < 16; ++i) {
        std::fprintf(stderr, " %s", os::call_name(plan.calls[static_cast<std::size_t>(i)]));
      }
      std::fprintf(stderr, "\n");
    }
    EXPECT(resource_errc(o.code));
    EXPECT(plan.count > 0);  // a resource failure only when one was injected
    EXPECT(errc_fits_injected(o.code));
    EXPECT(plan.injected_errno(o.sys_errno));
    EXPECT(ascii(o.what));
  }

  void check_metrics(const securememory::metrics_snapshot& before, const outcome& o) {
    const auto now = securememory::metrics();
    EXPECT(now.allocated == start_.allocated + allocated_);
    std::uint64_t live = 0;
    std::uint64_t locked = 0;
    for (const auto& m : secrets_) {
      if (!m->closed) ++live, locked += m->locked;
    }
    EXPECT(now.in_use == start_.in_use + live);
    EXPECT(now.locked_bytes == start_.locked_bytes + locked);
    const std::uint64_t failures = now.failures - before.failures;
    const bool counted_error = o.threw && (resource_errc(o.code) || o.code == errc::invalid_size);
    const std::uint64_t lo = counted_error ? 1 : 0;
    const std::uint64_t hi = std::max<std::uint64_t>(lo, static_cast<std::uint64_t>(plan.count));
    EXPECT(failures >= lo);
    EXPECT(failures <= hi);
  }

  void check_handles() {
    for (const auto& s : slots_) {
      const bool closed = s.m == nullptr || s.m->closed;
      EXPECT(s.handle.is_closed() == closed);
      if (s.m == nullptr) {
        EXPECT(s.handle.size() == 0);
        EXPECT(s.handle.backend().empty());
      } else {
        EXPECT(s.handle.backend() == s.m->backend);
        if (!closed) EXPECT(s.handle.size() == s.m->size);
      }
    }
  }

  outcome operation() {
    expect_.reset();
    expect_any_ = false;
    huge_ = false;
    last_op_ = in_.byte() % 11;
    switch (last_op_) {
      case 0: return op_create();
      case 1: return op_create_random();
      case 2: return op_with_bytes();
      case 3: return op_reader_open();
      case 4: return op_reader_read();
      case 5: return op_verify();
      case 6: return op_close();
      case 7: return op_move();
      case 8: return op_swap();
      case 9: return op_destroy();
      default: return op_make_factory();
    }
  }

  // ---- operations ----

  slot& pick_slot() { return slots_[in_.byte() % slots_.size()]; }
  backend_entry& pick_backend() { return (*backends)[in_.byte() % backends->size()]; }

  std::size_t pick_size(bool allow_huge) {
    const std::uint8_t kind = in_.byte();
    const std::size_t page = os::page_size();
    switch (kind % 8) {
      case 0:
        if (allow_huge) {
          huge_ = true;
          // Sizes whose rounding overflows, and sizes just below that the
          // kernel refuses (never a size in between: mlock of terabytes
          // would page in real memory).
          const std::array<std::size_t, 6> huge{size_max, size_max - 1, size_max - page + 2, size_max - page,
                                                size_max / 2, std::size_t{1} << 62U};
          return huge[in_.byte() % huge.size()];
        }
        return 0;
      case 1: return 0;
      case 2: return page - 1 + (in_.byte() % 3);  // around one page
      case 3: return 2 * page - 1 + (in_.byte() % 3);
      case 4: return 1 + in_.u16() % (3 * page);
      default: return 1 + in_.byte() % 64;
    }
  }

  // The bytes of a new secret: derived from the input, high bit always set.
  std::vector<std::byte> make_bytes(std::size_t n) {
    std::uint32_t x = in_.byte() * 2654435761U + 1U;
    std::vector<std::byte> v(n);
    for (auto& b : v) {
      x = x * 1103515245U + 12345U;
      b = static_cast<std::byte>(0x80U | ((x >> 16U) & 0x7FU));
    }
    return v;
  }

  model_secret* add_model(const backend_entry& b, std::size_t size, std::vector<std::byte> bytes, std::uint64_t locked) {
    auto m = std::make_unique<model_secret>();
    m->backend = b.name;
    m->size = size;
    m->bytes = std::move(bytes);
    m->locked = locked;
    secrets_.push_back(std::move(m));
    ++allocated_;
    return secrets_.back().get();
  }

  // Puts a new secret into a slot: the handle it replaces is closed.
  void place(slot& s, Secret&& secret, model_secret* m) {
    close_model(s.m);
    s.handle = std::move(secret);
    s.m = m;
  }

  static void close_model(model_secret* m) {
    if (m != nullptr) m->closed = true;
  }

  outcome op_create() {
    backend_entry& b = pick_backend();
    slot& s = pick_slot();
    const std::size_t size = pick_size(false);
    if (size == 0) expect_ = errc::invalid_size;
    const auto bytes = make_bytes(size);
    auto source = bytes;
    const auto locked_before = securememory::metrics().locked_bytes;
    std::optional<Secret> made;
    outcome o = attempt([&] { made.emplace(b.factory.create(source)); });
    if (o.threw) {
      EXPECT(source == bytes);  // untouched on failure
      return o;
    }
    EXPECT(size != 0);
    EXPECT(std::all_of(source.begin(), source.end(), [](std::byte x) { return x == std::byte{0}; }));
    const auto locked = securememory::metrics().locked_bytes - locked_before;
    place(s, std::move(*made), add_model(b, size, bytes, locked));
    return o;
  }

  outcome op_create_random() {
    backend_entry& b = pick_backend();
    slot& s = pick_slot();
    const std::size_t size = pick_size(true);
    if (size == 0 || size > size_max - os::page_size() + 1) expect_ = errc::invalid_size;
    const auto locked_before = securememory::metrics().locked_bytes;
    std::optional<Secret> made;
    outcome o = attempt([&] { made.emplace(b.factory.create_random(size)); });
    if (o.threw) return o;
    EXPECT(size != 0 && !huge_);
    const auto locked = securememory::metrics().locked_bytes - locked_before;
    // Learn the random bytes once, with no failure armed; later reads must agree.
    const int target = plan.target;
    plan.target = -1;
    std::vector<std::byte> bytes;
    made->with_bytes([&](std::span<const std::byte> span) { bytes.assign(span.begin(), span.end()); });
    plan.target = target;
    EXPECT(bytes.size() == size);
    if (size >= 16) EXPECT(std::any_of(bytes.begin(), bytes.end(), [](std::byte x) { return x != std::byte{0}; }));
    place(s, std::move(*made), add_model(b, size, std::move(bytes), locked));
    return o;
  }

  static bool same(std::span<const std::byte> got, const model_secret& m) {
    return got.size() == m.size && std::equal(got.begin(), got.end(), m.bytes.begin());
  }

  outcome op_with_bytes() {
    slot& s = pick_slot();
    const std::uint8_t variant = in_.byte() % 6;
    slot& other = pick_slot();
    model_secret* const m = s.m;
    const bool open = m != nullptr && !m->closed;
    if (!open) expect_ = errc::closed;
    bool called = false;
    bool destroyed = false;
    outcome o = attempt([&] {
      s.handle.with_bytes([&](std::span<const std::byte> bytes) {
        EXPECT(open);
        called = true;
        EXPECT(same(bytes, *m));
        switch (variant) {
          case 1: throw callback_error{42};
          case 2: {  // nested access to the same secret shares the opening
            const auto inner = s.handle.with_bytes([&](std::span<const std::byte> b) { return b.data(); });
            EXPECT(inner == bytes.data());
            break;
          }
          case 3: {  // close from inside: refused, secret stays open
            const outcome inner = attempt([&] { s.handle.close(); });
            EXPECT(inner.threw && inner.code == errc::reentrant_close);
            EXPECT(!s.handle.is_closed());
            break;
          }
          case 4: {  // destroy the handle inside: closed when the callback returns
            const auto in_use = securememory::metrics().in_use;
            s.handle = Secret{};
            s.m = nullptr;
            destroyed = true;
            EXPECT(securememory::metrics().in_use == in_use);
            EXPECT(same(bytes, *m));  // still readable
            break;
          }
          case 5: {  // another secret inside this one's callback
            if (&other == &s || other.m == nullptr || other.m->closed) break;
            const outcome inner = attempt([&] {
              other.handle.with_bytes([&](std::span<const std::byte> b) { EXPECT(same(b, *other.m)); });
            });
            if (inner.threw) {  // only an injected failure may stop it
              EXPECT(plan.count > 0);
              EXPECT(resource_errc(inner.code) && errc_fits_injected(inner.code));
            }
            break;
          }
          default: break;
        }
      });
    });
    if (destroyed) close_model(m);
    // The callback's own exception comes back unchanged, never replaced.
    EXPECT(o.callback_threw == (called && variant == 1));
    if (open && !called) EXPECT(o.threw);  // only a failed opening skips the callback
    return o;
  }

  outcome op_reader_open() {
    reader_slot& r = readers_[in_.byte() % readers_.size()];
    slot& s = pick_slot();
    const bool open = s.m != nullptr && !s.m->closed;
    if (!open) expect_ = errc::closed;
    std::optional<securememory::Reader> made;
    outcome o = attempt([&] { made.emplace(s.handle.reader()); });
    if (!o.threw) {
      EXPECT(open);
      r.r = std::move(made);
      r.m = s.m;
      r.offset = 0;
    }
    return o;
  }

  outcome op_reader_read() {
    reader_slot& r = readers_[in_.byte() % readers_.size()];
    const std::size_t want = in_.byte() % 2 == 0 ? in_.byte() % 8 : in_.u16() % (3 * os::page_size() + 8);
    if (!r.r) return {};
    const bool open = !r.m->closed;
    if (!open) expect_ = errc::closed;
    std::vector<std::byte> out(want, std::byte{0x11});
    std::size_t got = 0;
    outcome o = attempt([&] { got = r.r->read(out); });
    if (o.threw) return o;  // offset unchanged: the model keeps it
    EXPECT(open);
    const std::size_t expected = std::min(want, r.m->size - r.offset);
    EXPECT(got == expected);
    EXPECT(std::equal(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(got),
                      r.m->bytes.begin() + static_cast<std::ptrdiff_t>(r.offset)));
    EXPECT(std::all_of(out.begin() + static_cast<std::ptrdiff_t>(got), out.end(),
                       [](std::byte x) { return x == std::byte{0x11}; }));
    r.offset += got;
    return o;
  }

  // Secret::verify() (canary check) where this version of the library has
  // it: intact for an open secret; a closed one may throw closed or report.
  outcome op_verify() {
    slot& s = pick_slot();
    const bool open = s.m != nullptr && !s.m->closed;
    if (!open) {
      expect_ = errc::closed;
      expect_any_ = true;
    }
    return verify_step(s.handle, open);
  }

  template <class S>
  static outcome verify_step(S& handle, bool open) {
    if constexpr (has_verify<S>) {
      return attempt([&] {
        if constexpr (std::is_same_v<decltype(handle.verify()), bool>) {
          const bool intact = handle.verify();
          if (open) EXPECT(intact);
        } else {
          handle.verify();
        }
      });
    } else {
      (void)handle, (void)open;
      return {};
    }
  }

  outcome op_close() {
    slot& s = pick_slot();
    const bool open = s.m != nullptr && !s.m->closed;
    outcome o = attempt([&] { s.handle.close(); });
    // close() always ends closed, whether or not it reported a failure.
    close_model(s.m);
    if (open) check_release(s.m->backend, o);
    return o;
  }

  // What each backend's release does with an injected failure (an explicit
  // close of an open secret; the page cache is off).
  void check_release(const std::string& backend, const outcome& o) const {
    bool consumed_unmap = false;
    for (int i = 0; i < plan.count && i < 16; ++i) {
      const std::string_view c = os::call_name(plan.calls[static_cast<std::size_t>(i)]);
      consumed_unmap = consumed_unmap || c == "munmap" || c == "munlock";
    }
    if (backend == "protectedmemory" || backend == "secretmem") {
      // Every call of the release is checked and reported: no failure is
      // swallowed (protectedmemory: mprotect, munlock, munmap; secretmem:
      // mprotect twice, munmap of an emptied arena).
      if (plan.count > 0) EXPECT(o.threw);
    } else if (backend == "memguard") {
      // sodium_free unlocks and unmaps inside libsodium, past lib/os/: an
      // armed munlock or munmap is never reached, so release_failed never
      // comes (design.md, "memguard and violations"). Only the mprotects
      // (the check's opening, then read-write for the wipe) can fail; the
      // block is then unmapped through lib/os/, but no second call fails.
      EXPECT(!consumed_unmap);
      EXPECT(!(o.threw && o.code == errc::release_failed));
    } else if (backend == "sealed") {
      // Nothing per secret to give back to the kernel: the scratch chunk is
      // wiped and returned, the slot wiped and freed; an opening for the
      // integrity check that fails is logged and the release goes on.
      EXPECT(!o.threw);
    }
  }

  outcome op_move() {
    slot& from = pick_slot();
    slot& to = pick_slot();
    if (&from == &to) {
      Secret& alias = to.handle;
      to.handle = std::move(alias);  // self-move: a no-op
      return {};
    }
    close_model(to.m);
    to.handle = std::move(from.handle);
    to.m = from.m;
    from.m = nullptr;
    return {};
  }

  outcome op_swap() {
    slot& a = pick_slot();
    slot& b = pick_slot();
    if (&a == &b) return {};
    std::swap(a.handle, b.handle);  // move construction and two move assignments
    std::swap(a.m, b.m);
    return {};
  }

  outcome op_destroy() {
    slot& s = pick_slot();
    s.handle = Secret{};
    close_model(s.m);
    s.m = nullptr;
    return {};
  }

  outcome op_make_factory() {
    const std::string name = in_.text(in_.byte() % 80);
    const bool known = std::find(available->begin(), available->end(), name) != available->end();
    const auto names = securememory::backend_names();
    const bool registered = std::find(names.begin(), names.end(), name) != names.end();
    if (!registered) expect_ = errc::unknown_backend;
    // A registered backend that could not be made at start-up is unavailable;
    // its maker may also fail under an injected fault.
    if (registered && !known) expect_ = errc::backend_unavailable;
    outcome o = attempt([&] {
      const auto factory = securememory::make_factory(name);
      EXPECT(factory.backend() == name);
    });
    if (o.threw && o.code == errc::unknown_backend) {
      EXPECT(!registered);
      o = {};  // its message quotes the caller's name, which may be anything
      expect_.reset();
    }
    return o;
  }

  // ---- end of input ----

  void finish() {
    plan.disarm();
    for (auto& r : readers_) r.r.reset();
    for (auto& s : slots_) {
      s.handle = Secret{};
      close_model(s.m);
      s.m = nullptr;
    }
    const auto now = securememory::metrics();
    EXPECT(now.in_use == start_.in_use);
    EXPECT(now.locked_bytes == start_.locked_bytes);
    EXPECT(now.allocated == start_.allocated + allocated_);
    check_locked_memory(now);
  }

  // The kernel's count of locked memory (VmLck) against what the library
  // may legitimately keep: pages of the page cache (cached_bytes) and
  // sealed's scratch slabs. Anything more is a leak, allowed only where the
  // library reported it: a secretmem arena whose munmap failed stays mapped
  // and locked (the backend drops it from its list: docs/testing.md, "Known
  // gaps"), so it must be a memfd_secret mapping that appeared during this
  // input, and a munmap failure must have been injected. Such memory may
  // later go away with its mapping (a backend that keeps the arena and
  // unmaps it when it empties again), never below zero in total.
  void check_locked_memory(const securememory::metrics_snapshot& now) {
    const std::int64_t locked_delta = (vm_locked_kb() - start_locked_kb_) * 1024;
    const std::int64_t scratch_delta = sealed_scratch_locked() - start_scratch_;
    EXPECT(scratch_delta >= 0);
    const std::int64_t cached_delta =
        static_cast<std::int64_t>(now.cached_bytes) - static_cast<std::int64_t>(start_.cached_bytes);
    const std::int64_t leaked = locked_delta - scratch_delta - cached_delta;
    if (!tracking_secretmem) {
      EXPECT(leaked == 0);
      return;
    }
    // Nothing changed: the memfd_secret mappings are those of the start
    // (every arena made during the input was unmapped again), and the maps
    // need not be read.
    if (locked_delta == scratch_delta && cached_delta == 0) return;
    intervals mapped = secretmem_mappings();
    // Every change of locked memory beyond the scratch is a memfd_secret
    // mapping that appeared or went away (secretmem pages are locked for
    // their mapping's life; the page cache is off).
    EXPECT(locked_delta - scratch_delta == length_of(mapped) - length_of(*secretmem_at_start));
    const std::int64_t common = overlap(mapped, *secretmem_at_start);
    if (leaked > 0) {
      EXPECT(munmap_injected_ > 0);
      EXPECT(leaked <= length_of(mapped) - common);  // appeared during this input
      ++stats.leaked_inputs;
    } else if (leaked < 0) {
      // A backend that keeps such an arena (instead of forgetting it) may
      // reuse it and unmap it later: the memory must go away with it.
      EXPECT(-leaked <= length_of(*secretmem_at_start) - common);
    }
    plan.leaked_locked_bytes += leaked;
    EXPECT(plan.leaked_locked_bytes >= 0);  // never more given back than was left behind
    *secretmem_at_start = std::move(mapped);  // the next input starts from here
  }

  input& in_;
  securememory::metrics_snapshot start_;
  long start_locked_kb_;
  std::int64_t start_scratch_;
  int munmap_injected_ = 0;
  std::uint64_t allocated_ = 0;
  std::vector<std::unique_ptr<model_secret>> secrets_;
  std::array<reader_slot, 3> readers_{};
  std::array<slot, 4> slots_{};  // after secrets_: destroyed first
  std::optional<errc> expect_;
  bool expect_any_ = false;
  bool huge_ = false;
  int last_op_ = -1;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  securememory::set_log_sink(checking_sink);
  backends = new std::vector<backend_entry>();  // lives for the process
  // SECUREMEMORY_FUZZ_BACKENDS="a,b" limits the run to those backends.
  const char* only = std::getenv("SECUREMEMORY_FUZZ_BACKENDS");
  const std::string wanted = only != nullptr ? "," + std::string(only) + "," : std::string();
  available = new std::vector<std::string>();  // lives for the process
  for (const auto& name : securememory::backend_names()) {
    if (!securememory::backend_available(name)) continue;
    available->push_back(name);
    if (!wanted.empty() && wanted.find("," + name + ",") == std::string::npos) continue;
    backends->push_back({name, securememory::make_factory(name)});
  }
  if (!wanted.empty()) {  // a misspelt name must not turn into a silent skip
    const auto names = securememory::backend_names();
    for (std::size_t at = 1; at < wanted.size();) {
      const std::size_t end = wanted.find(',', at);
      const std::string name = wanted.substr(at, end - at);
      if (!name.empty() && std::find(names.begin(), names.end(), name) == names.end()) {
        std::fprintf(stderr, "secret-fuzz: SECUREMEMORY_FUZZ_BACKENDS names an unknown backend\n");
        std::abort();
      }
      at = end + 1;
    }
  }
  if (backends->empty()) {
    std::fprintf(stderr, "secret-fuzz: none of the requested backends is available on this host: skipped\n");
    std::exit(77);  // test/fuzz/run.py reports the target as skipped
  }
  // The page cache keeps closed secrets' pages locked by design (it has its
  // own tests): off here, so that VmLck must return to its start after
  // every input. Each backend's one-time locked state (sealed's key and
  // per-thread scratch) is made now, before any input is measured.
  securememory::set_page_cache_limit(0);
  for (const auto& b : *backends) {
    (void)b.factory.create_random(1);
    tracking_secretmem = tracking_secretmem || b.name == "secretmem";
  }
  secretmem_at_start = new intervals(secretmem_mappings());
  std::fprintf(stderr, "secret-fuzz: %zu backends, %d lib/os calls can fail\n", backends->size(), call_count);
  os::set_fault_hook(&fault_hook, nullptr);
  std::atexit(print_totals);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in(data, size);
  run r(in);
  r.execute();
  return 0;
}
