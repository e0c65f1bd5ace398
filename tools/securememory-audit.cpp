// securememory-audit: proves, on this host, every guarantee every
// registered backend declares, and reports what the host offers.
//
// Theory of operation: for each backend in backend_names() (or those named
// with --backend) it prints what the backend declares it guarantees here
// (Backend::describe(), the same as SecretFactory::guarantees()), then runs
// each check of the proof library (lib/proof/, the same code the test suite
// runs; or those named with --check), one per guarantee: kernel core dumps,
// a gcore snapshot, smaps Locked, memlock exhaustion, wiping at unmap, no
// access, plaintext at rest, /proc/PID/mem visibility of the secret and of
// the key, guard pages, the canary, tampering, fork, and a round trip. A
// check of a declared guarantee PASSes or FAILs; one the backend does not
// declare is N/A. It prints a table backend x check (PASS / FAIL / SKIP /
// N/A), the detail of every cell (with the reason for each SKIP and FAIL),
// then the host's capabilities; --json prints the same as one JSON object.
// Exit status: 0 when no check failed, 1 when any failed, 2 on a usage
// error. --selftest-broken adds a backend that declares every page
// guarantee and keeps none (heap memory), to show that the audit fails. Checks clean up after themselves: core files live in temporary
// directories that are removed, every child is reaped (or killed after a
// timeout); each check runs in a child of its own, so one that crashes is
// reported as a FAIL and the others still run. No secret byte is ever printed: details are counts, sizes and
// errno texts.
#include <securememory/securememory.hpp>

#include "proof/proof.hpp"

#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

namespace proof = securememory::proof;

struct cell {
  std::string backend;
  std::string check;
  proof::result result;
  double seconds = 0;
};

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// A backend that declares what protectedmemory provides and keeps none of
// it: plain heap memory. Its checks must FAIL (--selftest-broken).
class broken_backend final : public securememory::Backend {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "audit-selftest-broken"; }
  [[nodiscard]] securememory::BackendDescription describe() const noexcept override {
    securememory::BackendDescription d;
    d.provides.locked = true;
    d.provides.excluded_from_core_dumps = true;
    d.provides.no_access_while_idle = true;
    d.provides.hidden_from_fork_children = true;
    d.provides.wiped_on_release = true;
    return d;
  }
  [[nodiscard]] securememory::Region allocate(std::size_t size) override {
    securememory::Region r;
    r.base = ::operator new(size);
    r.data = static_cast<std::byte*>(r.base);
    r.size = size;
    r.mapped = size;
    return r;
  }
  std::optional<securememory::ViolationKind> protect(securememory::Region& r, securememory::Access a) override {
    r.current = a;
    return std::nullopt;
  }
  void release(securememory::Region& r) override {
    ::operator delete(r.base);  // not wiped
    r = securememory::Region{};
  }
};

void register_broken_backend() {
  securememory::register_backend("audit-selftest-broken", [] {
    static const auto instance = std::make_shared<broken_backend>();
    return instance;
  });
}

void usage(std::ostream& out) {
  out << "usage: securememory-audit [--json] [--backend NAME]... [--check NAME]... [--selftest-broken]\n"
         "Proves every guarantee every backend declares on this host and prints a table\n"
         "(PASS / FAIL / SKIP with reason / N/A: not declared) and the host's capabilities.\n"
         "Exit status: 0 no check failed, 1 any failed, 2 usage error.\n"
         "--selftest-broken registers \"audit-selftest-broken\", which declares guarantees it does\n"
         "not keep: its checks FAIL (to see the audit fail).\n"
         "checks:\n";
  for (const auto& c : proof::all_checks()) out << "  " << c.name << std::string(12 - std::min<std::size_t>(c.name.size(), 11), ' ') << c.title << "\n";
}

std::string pad(const std::string& s, std::size_t width) { return s.size() >= width ? s : s + std::string(width - s.size(), ' '); }

void print_text(const std::vector<std::string>& backends, const std::vector<const proof::check*>& checks,
                const std::vector<cell>& cells, bool ok) {
  std::size_t width = 8;
  for (const auto& b : backends) width = std::max(width, b.size() + 2);
  std::cout << "securememory-audit\n\n" << pad("backend", width);
  for (const auto* c : checks) std::cout << pad(std::string(c->name), std::max<std::size_t>(c->name.size() + 2, 6));
  std::cout << "\n";
  for (const auto& b : backends) {
    std::cout << pad(b, width);
    for (const auto* c : checks) {
      for (const auto& x : cells) {
        if (x.backend == b && x.check == c->name) {
          std::cout << pad(proof::status_name(x.result.state), std::max<std::size_t>(c->name.size() + 2, 6));
        }
      }
    }
    std::cout << "\n";
  }
  std::cout << "\nguarantees declared on this host (Backend::describe())\n";
  for (const auto& b : backends) {
    try {
      const auto factory = securememory::make_factory(b);
      const auto g = factory.guarantees();
      std::cout << "  " << pad(b, width) << (securememory::to_string(g).empty() ? "(none)" : securememory::to_string(g));
      if (!factory.key_backend().empty()) std::cout << "; key in " << factory.key_backend();
      std::cout << "\n";
    } catch (const std::exception& e) {
      std::cout << "  " << pad(b, width) << "(not available: " << e.what() << ")\n";
    }
  }
  std::cout << "\ndetails\n";
  for (const auto& x : cells) {
    std::cout << "  " << x.backend << " / " << x.check << ": " << proof::status_name(x.result.state) << " ("
              << static_cast<int>(x.seconds * 1000) << " ms)\n    " << x.result.detail << "\n";
  }
  std::cout << "\nhost\n";
  for (const auto& [k, v] : proof::host_capabilities()) std::cout << "  " << pad(k, 20) << v << "\n";
  std::cout << "\nresult: " << (ok ? "OK (no FAIL)" : "FAIL") << "\n";
}

void print_json(const std::vector<std::string>& backends, const std::vector<cell>& cells, bool ok) {
  std::cout << "{\n  \"results\": [\n";
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const auto& x = cells[i];
    std::cout << "    {\"backend\": " << json_string(x.backend) << ", \"check\": " << json_string(x.check)
              << ", \"status\": " << json_string(proof::status_name(x.result.state))
              << ", \"detail\": " << json_string(x.result.detail) << ", \"milliseconds\": " << static_cast<int>(x.seconds * 1000)
              << "}" << (i + 1 < cells.size() ? "," : "") << "\n";
  }
  std::cout << "  ],\n  \"host\": {\n";
  const auto host = proof::host_capabilities();
  for (std::size_t i = 0; i < host.size(); ++i) {
    std::cout << "    " << json_string(host[i].first) << ": " << json_string(host[i].second) << (i + 1 < host.size() ? "," : "")
              << "\n";
  }
  std::cout << "  },\n  \"guarantees\": {\n";
  for (std::size_t i = 0; i < backends.size(); ++i) {
    std::cout << "    " << json_string(backends[i]) << ": {";
    try {
      const auto factory = securememory::make_factory(backends[i]);
      const auto g = factory.guarantees();
      bool first = true;
      for (const auto which : securememory::all_guarantees()) {
        std::cout << (first ? "" : ", ") << json_string(std::string(securememory::to_string(which))) << ": "
                  << (securememory::has(g, which) ? "true" : "false");
        first = false;
      }
      std::cout << ", \"key_backend\": " << json_string(std::string(factory.key_backend()));
    } catch (const std::exception& e) {
      std::cout << "\"unavailable\": " << json_string(e.what());
    }
    std::cout << "}" << (i + 1 < backends.size() ? "," : "") << "\n";
  }
  std::cout << "  },\n  \"result\": " << json_string(ok ? "pass" : "fail") << "\n}\n";
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::vector<std::string> backends;
  std::vector<const proof::check*> checks;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if ((arg == "--backend" || arg == "--check") && i + 1 < argc) {
      const std::string value = argv[++i];
      if (arg == "--backend") {
        backends.push_back(value);
      } else if (const auto* c = proof::find_check(value)) {
        checks.push_back(c);
      } else {
        std::cerr << "securememory-audit: unknown check \"" << value << "\"\n";
        usage(std::cerr);
        return 2;
      }
    } else if (arg == "--selftest-broken") {
      register_broken_backend();
    } else if (arg == "--help" || arg == "-h") {
      usage(std::cout);
      return 0;
    } else {
      std::cerr << "securememory-audit: unknown argument \"" << arg << "\"\n";
      usage(std::cerr);
      return 2;
    }
  }
  if (sodium_init() < 0) {
    std::cerr << "securememory-audit: libsodium could not be initialised\n";
    return 2;
  }
  const auto known = securememory::backend_names();
  if (backends.empty()) backends = known;
  for (const auto& b : backends) {
    if (std::find(known.begin(), known.end(), b) == known.end()) {
      std::cerr << "securememory-audit: unknown backend \"" << b << "\"\n";
      return 2;
    }
  }
  if (checks.empty()) {
    for (const auto& c : proof::all_checks()) checks.push_back(&c);
  }
  std::vector<cell> cells;
  bool ok = true;
  for (const auto& b : backends) {
    const bool available = securememory::backend_available(b);
    for (const auto* c : checks) {
      cell x{b, std::string(c->name), {}, 0};
      const auto start = std::chrono::steady_clock::now();
      if (!available) {
        x.result = proof::result::skip("backend not available on this host");
      } else {
        // Each check runs in its own child: a check that crashes or hangs is
        // a FAIL saying how it died, and the audit goes on.
        try {
          x.result = proof::run_child_check([&] { return c->run(b); }, 600);
        } catch (const std::exception& e) {
          x.result = proof::result::fail(std::string("could not run the check: ") + e.what());
        }
      }
      x.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ok = ok && x.result.state != proof::status::fail;
      cells.push_back(std::move(x));
    }
  }
  if (json) {
    print_json(backends, cells, ok);
  } else {
    print_text(backends, checks, cells, ok);
  }
  return ok ? 0 : 1;
}
