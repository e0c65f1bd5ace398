// securememory proof: what root sees of a process's secrets through
// /proc/PID/mem (the path of ptrace, gdb and gcore): the secret's own
// memory (ptrace), and the key that decrypts secrets at rest (key).
//
// Theory of operation: a forked child holds the secrets (or makes its key),
// tells the parent the address, and waits; the parent, as root, preads
// /proc/CHILD/mem there and compares with what the child holds. mprotect
// does not stop this path (the kernel reads with FOLL_FORCE); only memory
// outside the kernel's direct map (memfd_secret) reads as EIO.
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include "backends/sealed.hpp"
#include "internal.hpp"

#include <securememory/registry.hpp>

#include <sodium.h>

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <unistd.h>

namespace securememory::proof {
namespace {

// What root reads of `size` bytes at `address` in process `pid`:
// `readable` when the read succeeded and matched `expected`.
// NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
std::string read_as_root(pid_t pid, std::uintptr_t address, std::span<const std::byte> expected, bool& readable) {
  readable = false;
  const int fd = open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "cannot open /proc/PID/mem: " + errno_string(errno);
  std::vector<std::byte> buf(expected.size());
  const ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(address));
  const int err = errno;
  close(fd);
  std::string seen;
  if (n == static_cast<ssize_t>(buf.size())) {
    readable = std::equal(buf.begin(), buf.end(), expected.begin());
    seen = readable ? "readable by root: the bytes themselves" : "readable by root, but not the bytes";
  } else {
    seen = "not readable by root (" + (n < 0 ? errno_string(err) : "short read of " + std::to_string(n) + " B") + ")";
  }
  sodium_memzero(buf.data(), buf.size());
  return seen;
}

result ptrace_visibility(const std::string& backend, std::size_t size, bool declared) {
  const secret_exchange exchange(size);
  holding_child child(exchange, backend);
  std::string seen;
  bool readable = false;
  if (child.ready()) {
    auto given = exchange.given_bytes();
    seen = read_as_root(child.pid(), child.address(), given, readable);
    sodium_memzero(given.data(), given.size());
  }
  const auto end = child.finish();
  if (!child.ready()) return result::fail("the child did not get ready (" + end.describe() + ")");
  if (!declared) return result::not_provided(seen + " (mprotect does not stop ptrace)");
  return readable ? result::fail(seen + " (this backend must hide the bytes even from root)") : result::pass(seen);
}

}  // namespace

result check_ptrace(const std::string& backend) {
  const bool declared = description_of(backend).provides.outside_direct_map;
  return per_size([&](std::size_t size) { return ptrace_visibility(backend, size, declared); });
}

// The key of an encrypted-at-rest backend: unreadable by root through
// /proc/PID/mem where it is declared outside the direct map, and read-only
// between accesses in every case.
result check_key(const std::string& backend) {
  const BackendDescription d = description_of(backend);
  if (d.key_backend.empty()) return result::not_provided(backend + " has no key");
  pipe_pair ready;
  pipe_pair release;
  (void)std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return result::fail("fork failed: " + errno_string(errno));
  if (pid == 0) {
    ready.close_read();
    release.close_write();
    std::uintptr_t where = 0;
    std::size_t length = 0;
    std::string perms = "?";
    try {
      auto factory = make_factory(backend);
      auto secret = factory.create_random(32);  // makes this process's key
      secret.with_bytes([](std::span<const std::byte>) {});
      const auto key = detail::key_bytes_of(detail::backend_of(factory));
      where = reinterpret_cast<std::uintptr_t>(key.data());
      length = key.size();
      for (const auto& m : read_smaps()) {
        if (m.start <= where && where < m.end) perms = m.perms.substr(0, 3);
      }
      // The parent compares what it reads with the key, hidden: a mask
      // and the masked key (never the key itself) go through the pipe.
      std::vector<std::byte> mask(length);
      randombytes_buf(mask.data(), mask.size());
      std::vector<std::byte> masked(length);
      for (std::size_t i = 0; i < length; ++i) masked[i] = key[i] ^ mask[i];
      const bool sent = write_all(ready.write_fd, &where, sizeof where) && write_all(ready.write_fd, &length, sizeof length) &&
                        write_all(ready.write_fd, perms.data(), 3) && write_all(ready.write_fd, mask.data(), length) &&
                        write_all(ready.write_fd, masked.data(), length);
      sodium_memzero(masked.data(), masked.size());
      if (!sent) _exit(3);
      char c;
      while (::read(release.read_fd, &c, 1) > 0) {
      }
    } catch (...) {
      _exit(2);
    }
    _exit(0);
  }
  ready.close_write();
  release.close_read();
  std::uintptr_t where = 0;
  std::size_t length = 0;
  std::string perms(3, '?');
  bool got = read_exact(ready.read_fd, &where, sizeof where, 60000) && read_exact(ready.read_fd, &length, sizeof length, 60000) &&
             length > 0 && length <= 4096 && read_exact(ready.read_fd, perms.data(), 3, 60000);
  std::vector<std::byte> mask(got ? length : 0);
  std::vector<std::byte> masked(got ? length : 0);
  got = got && read_exact(ready.read_fd, mask.data(), length, 60000) && read_exact(ready.read_fd, masked.data(), length, 60000);
  std::string seen;
  bool readable = false;
  if (got && where != 0) {
    // Compare through the mask: the parent never holds the key either.
    const int fd = open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
    std::vector<std::byte> buf(length);
    const ssize_t n = fd >= 0 ? pread(fd, buf.data(), length, static_cast<off_t>(where)) : -1;
    const int err = errno;
    if (fd >= 0) close(fd);
    if (n == static_cast<ssize_t>(length)) {
      readable = true;
      for (std::size_t i = 0; i < length; ++i) readable = readable && (buf[i] ^ mask[i]) == masked[i];
      seen = readable ? "readable by root: the key itself" : "readable by root, but not the key";
    } else {
      seen = "not readable by root (" + (n < 0 ? errno_string(err) : "short read") + ")";
    }
    sodium_memzero(buf.data(), buf.size());
  }
  release.close_write();
  const auto end = wait_child(pid, 30);
  if (!got || where == 0) return result::fail("the child did not report its key (" + end.describe() + ")");
  const std::string detail = "key in " + std::string(d.key_backend) + ", " + perms + " between accesses, " + seen;
  if (perms.find('w') != std::string::npos) return result::fail(detail + " (the key must be read-only)");
  if (!d.provides.key_outside_direct_map) return result::not_provided(detail);
  return readable ? result::fail(detail + " (declared outside the direct map)") : result::pass(detail);
}

}  // namespace securememory::proof
