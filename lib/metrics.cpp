// securememory: the counters (include/securememory/metrics.hpp).
//
// Theory of operation: one never-destroyed block of relaxed atomics per
// backend name, found once per factory (factory_core keeps a pointer) and
// updated on creation and release; metrics() adds them up, backend_metrics()
// lists them. Locked memory that belongs to no secret is reported by its
// owners through registered functions (sealed's scratch and keys,
// secretmem's unused arena pages), and the page caches know what they hold
// per backend; both are read when the counters are. The list only grows,
// under a small lock; readers walk it without the lock (new blocks are
// published with release stores).
#include <securememory/metrics.hpp>

#include "metrics.hpp"

#include "internal.hpp"
#include "page_cache.hpp"
#include "small_mutex.hpp"

#include <algorithm>
#include <array>
#include <mutex>
#include <utility>

namespace securememory {
namespace detail {
namespace {

constinit std::atomic<backend_counters*> all_counters{nullptr};
constinit small_mutex counters_mutex;

struct internal_source {
  std::atomic<const char*> backend{nullptr};
  std::atomic<locked_source> fn{nullptr};
};
constexpr std::size_t max_sources = 4;
constinit std::array<internal_source, max_sources> internal_sources{};

std::uint64_t internal_locked_of(std::string_view backend) noexcept {
  std::uint64_t total = 0;
  for (const auto& s : internal_sources) {
    const auto fn = s.fn.load(std::memory_order_acquire);
    if (fn != nullptr && (backend.empty() || backend == s.backend.load(std::memory_order_relaxed))) total += fn();
  }
  return total;
}

}  // namespace

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
backend_counters& counters_for(std::string_view name, std::size_t mappings_per_secret) {
  for (backend_counters* c = all_counters.load(std::memory_order_acquire); c != nullptr; c = c->next) {
    if (c->name == name) return *c;
  }
  const std::lock_guard lock(counters_mutex);
  for (backend_counters* c = all_counters.load(std::memory_order_relaxed); c != nullptr; c = c->next) {
    if (c->name == name) return *c;
  }
  auto* made = new backend_counters();  // never destroyed: counted until the process ends
  made->name = std::string(name);
  made->mappings_per_secret = mappings_per_secret;
  made->next = all_counters.load(std::memory_order_relaxed);
  all_counters.store(made, std::memory_order_release);
  return *made;
}

void count_created(backend_counters& c, std::size_t size, std::size_t locked, std::size_t mapped) noexcept {
  c.allocated.fetch_add(1, std::memory_order_relaxed);
  c.in_use.fetch_add(1, std::memory_order_relaxed);
  c.bytes.fetch_add(size, std::memory_order_relaxed);
  c.locked.fetch_add(locked, std::memory_order_relaxed);
  c.mapped.fetch_add(mapped, std::memory_order_relaxed);
}

void count_released(backend_counters& c, std::size_t size, std::size_t locked, std::size_t mapped) noexcept {
  c.in_use.fetch_sub(1, std::memory_order_relaxed);
  c.bytes.fetch_sub(size, std::memory_order_relaxed);
  c.locked.fetch_sub(locked, std::memory_order_relaxed);
  c.mapped.fetch_sub(mapped, std::memory_order_relaxed);
}

void count_unlocked(backend_counters& c, std::size_t locked) noexcept { c.locked.fetch_sub(locked, std::memory_order_relaxed); }
void count_failure(backend_counters& c) noexcept { c.failures.fetch_add(1, std::memory_order_relaxed); }
void count_violation(backend_counters& c) noexcept { c.violations.fetch_add(1, std::memory_order_relaxed); }

void reset_counts_after_fork() noexcept {
  for (backend_counters* c = all_counters.load(std::memory_order_acquire); c != nullptr; c = c->next) {
    c->in_use.store(0, std::memory_order_relaxed);
    c->bytes.store(0, std::memory_order_relaxed);
    c->locked.store(0, std::memory_order_relaxed);
    c->mapped.store(0, std::memory_order_relaxed);
  }
}

void add_internal_locked_source(const char* backend, locked_source source) noexcept {
  for (auto& s : internal_sources) {
    locked_source expected = nullptr;
    if (s.fn.load(std::memory_order_acquire) == source) return;
    if (s.fn.compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel)) {
      s.backend.store(backend, std::memory_order_relaxed);
      s.fn.store(source, std::memory_order_release);
      return;
    }
  }
}

}  // namespace detail

MetricsSnapshot metrics() noexcept {
  MetricsSnapshot m;
  for (auto* c = detail::all_counters.load(std::memory_order_acquire); c != nullptr; c = c->next) {
    m.allocated += c->allocated.load(std::memory_order_relaxed);
    m.in_use += c->in_use.load(std::memory_order_relaxed);
    m.locked_bytes += c->locked.load(std::memory_order_relaxed);
    m.failures += c->failures.load(std::memory_order_relaxed);
    m.violations += c->violations.load(std::memory_order_relaxed);
  }
  m.cached_bytes = detail::page_cache::cached_bytes_of({});
  m.internal_locked_bytes = detail::internal_locked_of({});
  return m;
}

std::vector<BackendMetrics> backend_metrics() {
  std::vector<BackendMetrics> out;
  for (auto* c = detail::all_counters.load(std::memory_order_acquire); c != nullptr; c = c->next) {
    BackendMetrics b;
    b.backend = c->name;
    b.allocated = c->allocated.load(std::memory_order_relaxed);
    b.in_use = c->in_use.load(std::memory_order_relaxed);
    b.bytes_in_use = c->bytes.load(std::memory_order_relaxed);
    b.locked_bytes = c->locked.load(std::memory_order_relaxed);
    b.mapped_bytes = c->mapped.load(std::memory_order_relaxed);
    b.mappings = b.in_use * c->mappings_per_secret;
    b.failures = c->failures.load(std::memory_order_relaxed);
    b.violations = c->violations.load(std::memory_order_relaxed);
    b.cached_bytes = detail::page_cache::cached_bytes_of(c->name);
    b.internal_locked_bytes = detail::internal_locked_of(c->name);
    out.push_back(b);
  }
  std::sort(out.begin(), out.end(), [](const BackendMetrics& a, const BackendMetrics& b) { return a.backend < b.backend; });
  return out;
}

namespace {

// A label value as the text format wants it: backslash, double quote and
// newline escaped; other bytes as they are.
std::string label_value(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

struct family {
  const char* name;
  const char* type;
  const char* help;
};

}  // namespace

std::string metrics_text() {
  const std::vector<BackendMetrics> all = backend_metrics();
  std::string out;
  const auto head = [&](const family& f) {
    out += std::string("# HELP ") + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n";
  };
  const auto sample = [&](const char* name, const BackendMetrics& b, std::uint64_t value, const char* kind = nullptr) {
    out += std::string(name) + "{backend=\"" + label_value(b.backend) + "\"";
    if (kind != nullptr) out += std::string(",kind=\"") + kind + "\"";
    out += "} " + std::to_string(value) + "\n";
  };
  const std::array<std::pair<family, std::uint64_t BackendMetrics::*>, 7> simple{{
      {{"securememory_secrets_created_total", "counter", "Secrets created successfully."}, &BackendMetrics::allocated},
      {{"securememory_secrets_in_use", "gauge", "Secrets created and not yet closed."}, &BackendMetrics::in_use},
      {{"securememory_secret_bytes", "gauge", "Sizes of the secrets in use, added up."}, &BackendMetrics::bytes_in_use},
      {{"securememory_mapped_bytes", "gauge", "Address space of the secrets in use."}, &BackendMetrics::mapped_bytes},
      {{"securememory_mappings", "gauge", "Mappings of the secrets in use (estimated from the per-secret cost)."},
       &BackendMetrics::mappings},
      {{"securememory_failures_total", "counter", "Failed creations, protections and releases."},
       &BackendMetrics::failures},
      {{"securememory_violations_total", "counter", "Integrity violations found."}, &BackendMetrics::violations},
  }};
  for (const auto& [f, field] : simple) {
    head(f);
    for (const auto& b : all) sample(f.name, b, b.*field);
  }
  const family locked{"securememory_locked_bytes", "gauge",
                      "Locked memory (counts against RLIMIT_MEMLOCK): of secrets in use, in the page cache, or held "
                      "for the library itself."};
  head(locked);
  for (const auto& b : all) {
    sample(locked.name, b, b.locked_bytes, "secrets");
    sample(locked.name, b, b.cached_bytes, "cache");
    sample(locked.name, b, b.internal_locked_bytes, "internal");
  }
  return out;
}

}  // namespace securememory
