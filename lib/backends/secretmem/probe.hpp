// securememory internal: whether this host grants memfd_secret.
#pragma once

namespace securememory::detail::secretmem_parts {

/// Probes memfd_secret once per process (memfd_secret, then close). A
/// refusal by the kernel (ENOSYS, EINVAL, EPERM, EOPNOTSUPP) is remembered
/// and thrown as error(backend_unavailable) naming the requirement; a
/// transient failure (EMFILE, ENFILE, ENOMEM) is thrown the same way but
/// probed again next time.
void require_available();

/// The memfd_secret errno values by which the kernel (or a seccomp filter)
/// refuses it for good.
bool refused_by_kernel(int err) noexcept;

/// What a host needs for memfd_secret, for messages.
extern const char* const kernel_requirement;

/// fork(): the probe's lock is held across it.
void lock_probe_for_fork() noexcept;
void unlock_probe_after_fork() noexcept;

}  // namespace securememory::detail::secretmem_parts
