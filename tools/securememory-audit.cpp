// securememory-audit: proves, on this host, every guarantee of every
// registered backend, and reports what the host offers.
//
// Theory of operation: for each backend in backend_names() (or those named
// with --backend) it runs each check of the proof library (lib/proof/, the
// same code the test suite runs; or those named with --check): kernel core
// dumps, a gcore snapshot, smaps Locked, wiping at unmap, no access,
// /proc/PID/mem visibility, fork, memlock exhaustion, and a round trip.
// It prints a table backend x check (PASS / FAIL / SKIP), the detail of
// every cell (with the reason for each SKIP and FAIL), then the host's
// capabilities; --json prints the same as one JSON object. Exit status: 0
// when every check passed or was skipped, 1 when any failed, 2 on a usage
// error. Checks clean up after themselves: core files live in temporary
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

void usage(std::ostream& out) {
  out << "usage: securememory-audit [--json] [--backend NAME]... [--check NAME]...\n"
         "Proves every guarantee of every backend on this host and prints a table\n"
         "(PASS / FAIL / SKIP with reason) and the host's capabilities.\n"
         "Exit status: 0 all passed or skipped, 1 any failed, 2 usage error.\n"
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
  std::cout << "\ndetails\n";
  for (const auto& x : cells) {
    std::cout << "  " << x.backend << " / " << x.check << ": " << proof::status_name(x.result.state) << " ("
              << static_cast<int>(x.seconds * 1000) << " ms)\n    " << x.result.detail << "\n";
  }
  std::cout << "\nhost\n";
  for (const auto& [k, v] : proof::host_capabilities()) std::cout << "  " << pad(k, 20) << v << "\n";
  std::cout << "\nresult: " << (ok ? "OK (no FAIL)" : "FAIL") << "\n";
}

void print_json(const std::vector<cell>& cells, bool ok) {
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
    print_json(cells, ok);
  } else {
    print_text(backends, checks, cells, ok);
  }
  return ok ? 0 : 1;
}
