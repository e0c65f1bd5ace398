// securememory-audit: reports what this host offers for keeping secrets and
// checks that every registered backend works here.
//
// Theory of operation: first the host's capabilities (locked-memory limit,
// CAP_IPC_LOCK, core-dump settings, memfd_secret), read from the kernel;
// then, for each backend in backend_names(), a round trip: a random secret
// is created, read through with_bytes() and through reader(), the two reads
// are compared by their BLAKE2b digests (never printed), and the secret is
// closed. Exit status: 0 when every backend passed, 1 otherwise.
// No secret byte is ever printed.
#include <securememory/securememory.hpp>

#include <sodium.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

std::string limit_text(rlim_t v) { return v == RLIM_INFINITY ? "unlimited" : std::to_string(v); }

std::string read_first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return "(unreadable)";
  return line;
}

// CAP_IPC_LOCK is bit 14 of the effective capability set.
std::string has_cap_ipc_lock() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      const unsigned long long caps = std::stoull(line.substr(7), nullptr, 16);
      return (caps >> 14U) & 1U ? "yes" : "no";
    }
  }
  return "unknown";
}

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
  return std::string("no (") + std::strerror(err) + ")";
}

void print_host() {
  rlimit memlock{};
  rlimit core{};
  getrlimit(RLIMIT_MEMLOCK, &memlock);
  getrlimit(RLIMIT_CORE, &core);
  std::cout << "host\n"
            << "  RLIMIT_MEMLOCK      soft " << limit_text(memlock.rlim_cur) << ", hard " << limit_text(memlock.rlim_max)
            << " bytes\n"
            << "  CAP_IPC_LOCK        " << has_cap_ipc_lock() << "\n"
            << "  RLIMIT_CORE         soft " << limit_text(core.rlim_cur) << ", hard " << limit_text(core.rlim_max)
            << " bytes\n"
            << "  core_pattern        " << read_first_line("/proc/sys/kernel/core_pattern") << "\n"
            << "  memfd_secret        " << memfd_secret_status() << "\n"
            << "  page size           " << sysconf(_SC_PAGESIZE) << " bytes\n";
}

using digest = std::array<unsigned char, crypto_generichash_BYTES>;

// Creates, reads twice (with_bytes and reader), compares, closes.
void round_trip(const std::string& name, std::size_t size) {
  auto factory = securememory::make_factory(name);
  auto secret = factory.create_random(size);
  digest via_with_bytes{};
  secret.with_bytes([&](std::span<const std::byte> bytes) {
    crypto_generichash(via_with_bytes.data(), via_with_bytes.size(),
                       reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), nullptr, 0);
  });
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, crypto_generichash_BYTES);
  auto reader = secret.reader();
  std::array<std::byte, 4093> chunk{};  // not a power of two: exercises a partial last read
  std::size_t total = 0;
  for (std::size_t n = 0; (n = reader.read(chunk)) != 0;) {
    crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(chunk.data()), n);
    total += n;
  }
  sodium_memzero(chunk.data(), chunk.size());
  digest via_reader{};
  crypto_generichash_final(&state, via_reader.data(), via_reader.size());
  secret.close();
  if (total != size) throw std::runtime_error("reader returned " + std::to_string(total) + " bytes, expected " + std::to_string(size));
  if (sodium_memcmp(via_with_bytes.data(), via_reader.data(), via_reader.size()) != 0) {
    throw std::runtime_error("with_bytes and reader saw different bytes");
  }
  if (!secret.is_closed()) throw std::runtime_error("secret not closed after close()");
}

}  // namespace

int main() {
  if (sodium_init() < 0) {
    std::cerr << "securememory-audit: libsodium could not be initialised\n";
    return 2;
  }
  std::cout << "securememory-audit\n";
  print_host();
  std::cout << "backends\n";
  int failed = 0;
  for (const auto& name : securememory::backend_names()) {
    std::cout << "  " << name << "\n";
    if (!securememory::backend_available(name)) {
      std::cout << "    available         no\n";
      continue;
    }
    for (const std::size_t size : {std::size_t{32}, std::size_t{1} << 20U}) {
      std::cout << "    round trip " << size << " B";
      try {
        round_trip(name, size);
        std::cout << ": OK\n";
      } catch (const securememory::error& e) {
        ++failed;
        std::cout << ": FAIL (" << e.code().message() << ": " << e.what() << ")\n";
      } catch (const std::exception& e) {
        ++failed;
        std::cout << ": FAIL (" << e.what() << ")\n";
      }
    }
  }
  const auto m = securememory::metrics();
  std::cout << "metrics\n  allocated " << m.allocated << ", in use " << m.in_use << ", locked bytes "
            << m.locked_bytes << ", failures " << m.failures << "\n";
  std::cout << (failed == 0 ? "result: OK" : "result: FAIL") << "\n";
  return failed == 0 ? 0 : 1;
}
