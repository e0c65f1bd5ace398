// securememory: harden_process() (see include/securememory/harden.hpp).
//
// Theory of operation: two independent steps, each a read of the current
// setting followed by a change only when needed, through lib/os/ (so tests
// can make each call fail):
//   1. getrlimit/setrlimit(RLIMIT_CORE, {0, 0}) (POSIX: every platform);
//   2. the platform's tracing control (lib/os/: Linux prctl(PR_GET_DUMPABLE),
//      prctl(PR_SET_DUMPABLE, 0); FreeBSD procctl(PROC_TRACE_CTL)).
// A failure throws error(protection_failed) naming the call, its errno and
// what the earlier step already changed; nothing is ignored. Where the
// platform has no tracing control (macOS, the posix_only build), step 2
// throws error(protection_failed) saying so, after step 1 took effect:
// pass disable_ptrace = false there.
#include <securememory/harden.hpp>

#include "internal.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <cerrno>
#include <string>
#include <sys/resource.h>

namespace securememory {

HardenReport harden_process(const HardenOptions& options) {
  HardenReport report;
  std::string done;  // what already took effect, for a later failure's message
  if (options.disable_core_dumps) {
    rlimit core{};
    if (detail::os::get_limit(RLIMIT_CORE, core) != 0) {
      detail::throw_os_error(errc::protection_failed, "cannot read the core-dump limit", "getrlimit", errno);
    }
    report.previous_core_soft = core.rlim_cur;
    report.previous_core_hard = core.rlim_max;
    if (core.rlim_cur != 0 || core.rlim_max != 0) {
      const rlimit zero{0, 0};
      if (detail::os::set_limit(RLIMIT_CORE, zero) != 0) {
        detail::throw_os_error(errc::protection_failed, "cannot disable core dumps (RLIMIT_CORE 0)", "setrlimit", errno,
                               "nothing was changed");
      }
      report.core_limit_changed = true;
      done = "RLIMIT_CORE was set to 0 by this call (core dumps are off)";
    }
  }
  if (options.disable_ptrace) {
    const char* get_call = detail::os::get_traceable_call();
    if (get_call == nullptr) {
      detail::throw_os_error(errc::protection_failed, "cannot forbid tracing: this platform has no such control",
                             "harden_process(disable_ptrace)", ENOSYS,
                             (done.empty() ? std::string("nothing was changed") : done) +
                                 "; pass disable_ptrace = false on this platform");
    }
    const int dumpable = detail::os::get_traceable();
    if (dumpable < 0) {
      detail::throw_os_error(errc::protection_failed, "cannot read the dumpable flag", get_call, errno, done);
    }
    report.previous_dumpable = dumpable;
    if (dumpable != 0) {
      if (detail::os::forbid_tracing() != 0) {
        detail::throw_os_error(errc::protection_failed, "cannot clear the dumpable flag",
                               detail::os::forbid_tracing_call(), errno, done.empty() ? "nothing was changed" : done);
      }
      report.dumpable_changed = true;
    }
  }
  return report;
}

}  // namespace securememory
