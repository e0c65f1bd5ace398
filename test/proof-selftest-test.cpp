// The proofs can fail: each check is run against deliberately broken
// backends (registered only in this test program) and must report FAIL,
// and the core scanner must find a planted copy. Without this, a check
// that silently measured nothing would pass every real backend.
#include "support.hpp"

#include "os/os.hpp"
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <csignal>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

namespace proof = securememory::proof;
namespace os = securememory::detail::os;
using securememory::region;

namespace {

// mmap'd pages; each protection left out on request.
class broken_backend final : public securememory::backend {
 public:
  broken_backend(std::string name, bool lock, bool dontdump, bool wipe) : name_(std::move(name)), lock_(lock), dontdump_(dontdump), wipe_(wipe) {}
  [[nodiscard]] std::string_view name() const noexcept override { return name_; }
  [[nodiscard]] region allocate(std::size_t size) override {
    const std::size_t length = (size + 4095) / 4096 * 4096;
    void* base = os::map_anonymous(length);
    if (base == nullptr) throw securememory::error(securememory::errc::out_of_memory, "mmap failed");
    if (lock_ && os::lock(base, length) != 0) {
      os::unmap(base, length);
      throw securememory::error(securememory::errc::memlock_limit, "mlock failed; RLIMIT_MEMLOCK is 65536", errno);
    }
    if (dontdump_) {
      ::madvise(base, length, MADV_DONTDUMP);  // Linux directly, whatever lib/os/ provides in this build
      ::madvise(base, length, MADV_WIPEONFORK);
    }
    region r;
    r.base = base;
    r.data = static_cast<std::byte*>(base);
    r.size = size;
    r.mapped = length;
    r.locked = lock_ ? length : 0;
    return r;
  }
  // It claims what protectedmemory provides, whatever it leaves out: the
  // proofs must catch each broken claim.
  [[nodiscard]] securememory::BackendDescription describe() const noexcept override {
    securememory::BackendDescription d;
    d.provides.locked = true;
    d.provides.excluded_from_core_dumps = true;
    d.provides.no_access_while_idle = true;
    d.provides.hidden_from_fork_children = true;
    d.provides.wiped_on_release = true;
    return d;
  }
  std::optional<securememory::ViolationKind> protect(region& r, securememory::access a) override {
    const int prot = a == securememory::access::none ? PROT_NONE : a == securememory::access::read ? PROT_READ : PROT_READ | PROT_WRITE;
    os::protect(r.base, r.mapped, prot);
    return std::nullopt;
  }
  void release(region& r) override {
    os::protect(r.base, r.mapped, PROT_READ | PROT_WRITE);
    if (wipe_) std::memset(r.base, 0, r.mapped);
    if (lock_) os::unlock(r.base, r.mapped);
    os::unmap(r.base, r.mapped);
    r = region{};
  }

 private:
  std::string name_;
  bool lock_, dontdump_, wipe_;
};

void register_broken() {
  static const bool done = [] {
    securememory::register_backend("broken-nowipe", [] { return std::make_shared<broken_backend>("broken-nowipe", true, true, false); });
    securememory::register_backend("broken-plain", [] { return std::make_shared<broken_backend>("broken-plain", false, false, true); });
    return true;
  }();
  (void)done;
}

proof::result run(std::string_view check, const std::string& backend) {
  register_broken();
  return proof::find_check(check)->run(backend);
}

}  // namespace

TEST_CASE("the wipe check fails for a backend that does not wipe", "[selftest]") {
  const auto r = run("wipe", "broken-nowipe");
  INFO(r.detail);
  CHECK(r.state == proof::status::fail);
  CHECK(r.detail.find("NOT zero") != std::string::npos);
}

TEST_CASE("the swap check fails for a backend that does not lock", "[selftest]") {
  const auto r = run("swap", "broken-plain");
  INFO(r.detail);
  CHECK(r.state == proof::status::fail);
}

TEST_CASE("the fork check fails for a backend without wipe-on-fork", "[selftest]") {
  const auto r = run("fork", "broken-plain");
  INFO(r.detail);
  CHECK(r.state == proof::status::fail);
  CHECK(r.detail.find("non-zero bytes visible in the child") != std::string::npos);
}

TEST_CASE("the core-dump check finds a secret in pages without MADV_DONTDUMP", "[selftest][core]") {
  proof::core_scan scan;
  const auto r = proof::kernel_core_dump("broken-plain", 32, proof::core_state::idle, &scan);
  INFO(r.detail);
  if (r.state == proof::status::skip) {
    WARN("SKIP: " << r.detail);
    return;
  }
  CHECK(r.state == proof::status::fail);
  CHECK(scan.memory_hits >= 8);  // both 32-byte secrets, 4 pieces each
}

TEST_CASE("the gcore check finds a secret in pages without MADV_DONTDUMP", "[selftest][core]") {
  proof::core_scan scan;
  const auto r = proof::live_gcore("broken-plain", 32, &scan);
  INFO(r.detail);
  if (r.state == proof::status::skip) {
    WARN("SKIP: " << r.detail);
    return;
  }
  CHECK(r.state == proof::status::fail);
  CHECK(scan.memory_hits >= 8);
}

TEST_CASE("the envelope check finds the keys in pages without MADV_DONTDUMP", "[selftest][core]") {
  register_broken();
  proof::core_scan scan;
  const auto r = proof::envelope_core_dump("broken-plain", proof::envelope_path::create_with_idle, &scan);
  INFO(r.detail);
  if (r.state == proof::status::skip) {
    WARN("SKIP: " << r.detail);
    return;
  }
  CHECK(r.state == proof::status::fail);
  CHECK(scan.memory_hits >= 9 * 4);  // the IK and 8 DRKs, 4 pieces each
}

TEST_CASE("piece_set counts every copy of 15 or more bytes, at any alignment", "[selftest]") {
  const auto secret = test::pattern(64, 7);
  proof::piece_set pieces;
  pieces.add(secret);
  CHECK(pieces.pieces() == 8);
  std::vector<std::byte> hay(1000, std::byte{0});
  CHECK(pieces.count_in(hay) == 0);
  for (std::size_t shift = 0; shift < 8; ++shift) {
    std::fill(hay.begin(), hay.end(), std::byte{0});
    std::memcpy(hay.data() + 101 + shift, secret.data() + 3, 15);  // 15 bytes from an odd offset
    CAPTURE(shift);
    CHECK(pieces.count_in(hay) == 1);
  }
  std::memcpy(hay.data() + 500, secret.data(), 64);
  CHECK(pieces.count_in(hay) >= 8);
}
