// securememory proof: integrity violations are found and go through the
// handler and the policy: a write just in front of a secret (canary), and a
// change to its stored form (tamper).
//
// Theory of operation: each part runs in a forked child that corrupts one
// of its own secrets the way a stray write would (mprotect to reach a
// no-access page, one byte changed), then checks what the library does:
// with policy quarantine, the handler is called once with the right kind
// and the call throws errc::integrity_violation; with policy abort, the
// handler is called and the process dies of SIGABRT (not of a fault inside
// an allocator).
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include "backends/sealed.hpp"
#include "internal.hpp"

#include <securememory/error.hpp>
#include <securememory/registry.hpp>
#include <securememory/violation.hpp>

#include <csignal>
#include <sys/mman.h>

namespace securememory::proof {
namespace {

// Flips one bit of the byte at p, whatever the page's protection.
bool flip(std::byte* p) {
  const std::size_t page = page_size();
  auto* first = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(p) / page * page);  // NOLINT(performance-no-int-to-ptr)
  if (mprotect(first, page, PROT_READ | PROT_WRITE) != 0) return false;
  *p ^= std::byte{0x20};
  return mprotect(first, page, PROT_NONE) == 0;
}

// A corruption made by `corrupt` (false: could not be made) must be found
// with `kind`: once through the handler and integrity_violation
// (quarantine), then SIGABRT after the handler (abort).
result found_and_handled(const std::string& backend, ViolationKind kind,
                         const std::function<bool(const SecretFactory&, Secret&)>& corrupt, const char* what) {
  const result quarantined = run_child_check([&] {
    int calls = 0;
    ViolationKind seen{};
    set_violation_handler([&](const Violation& v) {
      ++calls;
      seen = v.kind;
    });
    set_violation_policy(ViolationPolicy::quarantine);
    auto factory = make_factory(backend);
    auto secret = factory.create_random(32);
    if (!corrupt(factory, secret)) return result::skip(std::string("cannot make the corruption: ") + what);
    try {
      secret.verify();
      return result::fail(std::string(what) + ": verify() found nothing");
    } catch (const error& e) {
      if (e.code_value() != errc::integrity_violation) return result::fail(std::string("verify() threw ") + e.what());
    }
    if (calls != 1) return result::fail("the handler was called " + std::to_string(calls) + " times, not once");
    if (seen != kind) return result::fail(std::string("reported as ") + std::string(to_string(seen)));
    if (!secret.is_closed()) return result::fail("not closed after the quarantine");
    return result::pass(std::string(what) + ": handler once (" + std::string(to_string(seen)) +
                        "), integrity_violation, quarantined");
  });
  child_report report;
  const auto aborted = run_child([&] {
    auto factory = make_factory(backend);
    auto secret = factory.create_random(32);
    set_violation_handler([&](const Violation&) { (void)write_all(report.report_fd(), "H", 1); });
    if (!corrupt(factory, secret)) return 3;
    secret.close();  // the policy (abort) kills the process here
    return 0;
  });
  const std::string handled = report.text();
  const bool ok = aborted.signaled && aborted.signal == SIGABRT && handled == "H";
  std::vector<std::pair<std::string, result>> parts;
  parts.emplace_back("quarantine", quarantined);
  const std::string detail = "close(): " + aborted.describe() + (handled == "H" ? ", after the handler" : ", handler not called");
  parts.emplace_back("abort", ok ? result::pass(detail) : result::fail(detail));
  return combine(parts);
}

}  // namespace

result check_canary(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::canary)) return *no;
  return found_and_handled(
      backend, ViolationKind::canary_overwritten,
      [](const SecretFactory&, Secret& s) { return flip(const_cast<std::byte*>(address_of(s)) - 1); },  // NOLINT(*-const-cast): the stray write under test
      "one byte just in front of the secret overwritten");
}

result check_tamper(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::tamper_detected)) return *no;
  return found_and_handled(
      backend, ViolationKind::authentication_failed,
      [](const SecretFactory& f, Secret& s) {
        if (!detail::is_sealed(detail::backend_of(f))) return false;  // a stored form this proof cannot find
        const auto stored = detail::sealed_ciphertext_of(detail::region_of(s));
        if (stored.empty()) return false;
        stored[stored.size() / 2] ^= std::byte{0x01};
        return true;
      },
      "one bit of the stored ciphertext changed");
}

}  // namespace securememory::proof
