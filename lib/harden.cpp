// securememory: harden_process() (see include/securememory/harden.hpp).
//
// Theory of operation: two independent steps, each a read of the current
// setting followed by a change only when needed, through lib/os/ (so tests
// can make each call fail):
//   1. getrlimit/setrlimit(RLIMIT_CORE, {0, 0});
//   2. prctl(PR_GET_DUMPABLE), prctl(PR_SET_DUMPABLE, 0).
// A failure throws error(protection_failed) naming the call, its errno and
// what the earlier step already changed; nothing is ignored.
#include <securememory/harden.hpp>

#include "internal.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <cerrno>
#include <string>
#include <sys/prctl.h>
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
    const int dumpable = detail::os::process_control(PR_GET_DUMPABLE, 0);
    if (dumpable < 0) {
      detail::throw_os_error(errc::protection_failed, "cannot read the dumpable flag", "prctl(PR_GET_DUMPABLE)", errno,
                             done);
    }
    report.previous_dumpable = dumpable;
    if (dumpable != 0) {
      if (detail::os::process_control(PR_SET_DUMPABLE, 0) != 0) {
        detail::throw_os_error(errc::protection_failed, "cannot clear the dumpable flag", "prctl(PR_SET_DUMPABLE, 0)",
                               errno, done.empty() ? "nothing was changed" : done);
      }
      report.dumpable_changed = true;
    }
  }
  return report;
}

}  // namespace securememory
