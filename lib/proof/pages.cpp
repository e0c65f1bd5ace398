// securememory proof: what the secret's memory looks like to the process
// itself: Locked in smaps (swap), faults outside an access (no-access),
// only ciphertext at rest (at-rest), a fault right past its end
// (guard-pages).
//
// Theory of operation: each check runs for backends that declare its
// guarantee (description_of), uses the public API, and does what may
// crash in a forked child. For encrypted-at-rest backends the plaintext
// exists only inside an access, in a scratch: the page-level checks look at
// that scratch while it holds the plaintext.
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <securememory/registry.hpp>

#include <sodium.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace securememory::proof {
namespace {

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
  const std::size_t page = page_size();
  const std::uintptr_t lo = reinterpret_cast<std::uintptr_t>(data) / page * page;
  const std::uintptr_t hi = (reinterpret_cast<std::uintptr_t>(data) + size + page - 1) / page * page;
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

result swap_at_rest_encrypted(const std::string& backend) {
  std::vector<std::pair<std::string, result>> parts;
  auto factory = make_factory(backend);
  for (const auto size : secret_sizes()) {
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

}  // namespace

result check_swap(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::locked)) return *no;
  if (description_of(backend).provides.encrypted_at_rest) return swap_at_rest_encrypted(backend);
  std::vector<std::pair<std::string, result>> parts;
  auto factory = make_factory(backend);
  for (const auto size : secret_sizes()) {
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

result check_no_access(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::no_access_while_idle)) return *no;
  std::vector<std::pair<std::string, result>> parts;
  for (const auto size : secret_sizes()) {
    // Control: reading every byte inside with_bytes works.
    const auto control = run_child([&] {
      auto s = make_factory(backend).create_random(size);
      return s.with_bytes([](std::span<const std::byte> b) {
        unsigned x = 0;
        for (const auto& v : b) x += std::to_integer<unsigned>(*static_cast<const volatile std::byte*>(&v));
        return x == 0xFFFFFFFFU ? 1 : 0;
      });
    });
    // Probe: reading the first and the last byte outside it dies of SIGSEGV.
    bool ok = control.exited && control.exit_code == 0;
    std::string detail = "inside with_bytes: " + control.describe();
    for (const std::size_t at : {std::size_t{0}, size - 1}) {
      const auto probe = run_child([&] {
        auto s = make_factory(backend).create_random(size);
        const auto* p = address_of(s);
        volatile std::byte b = *static_cast<const volatile std::byte*>(p + at);
        (void)b;
        return 0;
      });
      ok = ok && probe.signaled && probe.signal == SIGSEGV;
      detail += ", byte " + std::to_string(at) + " outside: " + probe.describe();
    }
    parts.emplace_back(size_label(size), ok ? result::pass(detail) : result::fail(detail));
  }
  return combine(parts);
}

// Encrypted at rest: outside an access, no copy of the plaintext anywhere
// in the process's memory. A child holds two idle secrets (given and
// random, learned through a memfd); the parent reads every mapping of the
// child through /proc/PID/mem (which reads no-access pages too; memfd_secret
// pages, where a key may live, read as EIO) and counts the secrets' pieces.
result check_at_rest(const std::string& backend) {
  return per_size([&](std::size_t size) {
    const secret_exchange exchange(size);
    holding_child child(exchange, backend);
    const bool declared = description_of(backend).provides.encrypted_at_rest;
    std::size_t hits = 0;
    std::size_t scanned = 0;
    if (child.ready()) hits = pieces_in_process(child.pid(), exchange.pieces(), &scanned);
    const auto end = child.finish();
    if (!child.ready()) return result::fail("the child did not get ready (" + end.describe() + ")");
    const std::string detail = std::to_string(hits) + " pieces of the idle secrets in " +
                               std::to_string(scanned >> 20U) + " MiB of the child's memory read as root";
    if (!declared) return result::not_provided(detail + " (the plaintext is at rest in memory)");
    return hits == 0 ? result::pass(detail) : result::fail(detail);
  });
}

// Guard pages: a read right past the end of the secret's memory (the end of
// its last page; for a right-aligned backend that is its last byte) faults.
result check_guard_pages(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::guard_pages)) return *no;
  std::vector<std::pair<std::string, result>> parts;
  for (const std::size_t size : {std::size_t{1}, std::size_t{32}, std::size_t{4096}, std::size_t{5000}}) {
    child_report report;
    const auto probe = run_child([&] {
      auto s = make_factory(backend).create_random(size);
      return s.with_bytes([&](std::span<const std::byte> b) {
        const auto last = reinterpret_cast<std::uintptr_t>(b.data()) + size;
        const std::uintptr_t past = (last + page_size() - 1) / page_size() * page_size();
        const std::string aligned = past == last ? "right-aligned" : "not right-aligned";
        (void)write_all(report.report_fd(), aligned.data(), aligned.size());
        (void)*reinterpret_cast<const volatile std::byte*>(past);  // NOLINT(performance-no-int-to-ptr): the probe
        return 2;  // read past the end without a fault
      });
    });
    const std::string layout = report.text();
    const bool ok = probe.signaled && probe.signal == SIGSEGV;
    parts.emplace_back(size_label(size), ok ? result::pass("past the end: " + probe.describe() + " (" + layout + ")")
                                            : result::fail("past the end: " + probe.describe() + " (" + layout + ")"));
  }
  return combine(parts);
}

}  // namespace securememory::proof
