// securememory: the once-per-process memfd_secret probe (see probe.hpp).
#include "backends/secretmem/probe.hpp"

#include "backends/secretmem.hpp"
#include "internal.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <cerrno>
#include <fcntl.h>
#include <mutex>
#include <string>

namespace securememory::detail {
namespace secretmem_parts {

const char* const kernel_requirement =
    "memfd_secret needs Linux 5.14+ built with CONFIG_SECRETMEM, booted with secretmem.enable=1 on kernels "
    "before 6.5 (secretmem.enable=0 turns it off on any kernel); seccomp filters (container runtimes) may also "
    "refuse it. Use the protectedmemory backend on this host";

namespace {

struct probe_state {
  enum class status : unsigned char { unknown, available, refused };
  std::mutex mutex;
  status state = status::unknown;
  int err = 0;
};

probe_state& probe() {
  static auto* instance = new probe_state();  // never destroyed, like the registry
  return *instance;
}

// Made while the library loads (detail::made_at_load): a forked child never
// finds it half-made by a thread it does not have.
// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool probe_made_at_load = made_at_load([] { (void)probe(); });

}  // namespace

bool refused_by_kernel(int err) noexcept { return err == ENOSYS || err == EINVAL || err == EPERM || err == EOPNOTSUPP; }

void require_available() {
  auto& p = probe();
  const std::lock_guard lock(p.mutex);
  if (p.state == probe_state::status::available) return;
  int err = p.err;
  if (p.state == probe_state::status::unknown) {
    const int fd = os::memfd_secret(O_CLOEXEC);
    if (fd >= 0) {
      (void)os::close_fd(fd);  // Linux releases the descriptor even when close fails
      p.state = probe_state::status::available;
      return;
    }
    err = errno;
    if (refused_by_kernel(err)) {
      p.state = probe_state::status::refused;
      p.err = err;
    }
  }
  throw_os_error(errc::backend_unavailable, "the secretmem backend is not available on this host", "memfd_secret", err,
                 refused_by_kernel(err) ? std::string(kernel_requirement)
                                        : std::string("this looks transient; the next attempt probes again"));
}

void lock_probe_for_fork() noexcept { probe().mutex.lock(); }
void unlock_probe_after_fork() noexcept { probe().mutex.unlock(); }

}  // namespace secretmem_parts

void forget_secretmem_probe() noexcept {
  auto& p = secretmem_parts::probe();
  const std::lock_guard lock(p.mutex);
  p.state = secretmem_parts::probe_state::status::unknown;
  p.err = 0;
}

}  // namespace securememory::detail
