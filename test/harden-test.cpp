// harden_process(): what it changes, that a hardened process writes no core
// and cannot be read through /proc/PID/mem by a non-root peer of the same
// user, what root can still do, and that failures are reported. Every
// hardening runs in a forked child: the settings are process-wide.
#include "support.hpp"

#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <csignal>
#include <functional>
#include <cstring>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

namespace proof = securememory::proof;
using securememory::errc;
using securememory::harden_options;
using securememory::harden_process;
using call = securememory::detail::os::call;

SM_TEST("harden_process changes the core limit and the dumpable flag, and reports it", "[harden]") {
  SM_SKIP_UNLESS(test::tracing_control_here(), "this platform has no tracing control (prctl PR_SET_DUMPABLE)");
  const auto r = test::run_in_child([] {
    const rlimit raised{1 << 20, RLIM_INFINITY};
    if (setrlimit(RLIMIT_CORE, &raised) != 0) return 2;
    const auto report = harden_process();
    if (!report.core_limit_changed || report.previous_core_soft != (1U << 20U) || report.previous_core_hard != RLIM_INFINITY) return 3;
    if (!report.dumpable_changed || report.previous_dumpable != 1) return 4;
    rlimit now{};
    getrlimit(RLIMIT_CORE, &now);
    if (now.rlim_cur != 0 || now.rlim_max != 0) return 5;
    if (prctl(PR_GET_DUMPABLE) != 0) return 6;
    const auto again = harden_process();  // nothing left to change
    if (again.core_limit_changed || again.dumpable_changed || again.previous_dumpable != 0) return 7;
    return 0;
  });
  INFO(r.describe());
  CHECK(r.exited);
  CHECK(r.exit_code == 0);
}

SM_TEST("each hardening step is selectable", "[harden]") {
  const auto core_only = test::run_in_child([] {
    const auto report = harden_process({.disable_core_dumps = true, .disable_ptrace = false});
    return report.previous_dumpable == -1 && !report.dumpable_changed && prctl(PR_GET_DUMPABLE) == 1 ? 0 : 2;
  });
  CHECK(core_only.exit_code == 0);
  SM_SKIP_UNLESS(test::tracing_control_here(), "this platform has no tracing control (prctl PR_SET_DUMPABLE)");
  const auto ptrace_only = test::run_in_child([] {
    rlimit before{};
    getrlimit(RLIMIT_CORE, &before);
    const auto report = harden_process({.disable_core_dumps = false, .disable_ptrace = true});
    rlimit after{};
    getrlimit(RLIMIT_CORE, &after);
    return !report.core_limit_changed && report.dumpable_changed && after.rlim_max == before.rlim_max &&
                   prctl(PR_GET_DUMPABLE) == 0
               ? 0
               : 2;
  });
  CHECK(ptrace_only.exit_code == 0);
}

SM_TEST("harden_process reports a failing setrlimit or prctl", "[harden][faults]") {
  const auto r = test::run_in_child([] {
    {
      test::fault_injector fault(call::setrlimit, EPERM);
      try {
        (void)harden_process();
        return 2;
      } catch (const securememory::error& e) {
        const std::string what = e.what();
        if (e.code() != errc::protection_failed || e.sys_errno() != EPERM) return 3;
        if (what.find("setrlimit") == std::string::npos || what.find("nothing was changed") == std::string::npos) return 4;
      }
      if (prctl(PR_GET_DUMPABLE) != 1) return 5;  // stopped at the first failure
    }
    if (!test::tracing_control_here()) return 0;
    {
      test::fault_injector fault(call::prctl, EINVAL, 1);  // PR_GET works, PR_SET fails
      try {
        (void)harden_process();
        return 6;
      } catch (const securememory::error& e) {
        const std::string what = e.what();
        if (e.code() != errc::protection_failed || e.sys_errno() != EINVAL) return 7;
        if (what.find("PR_SET_DUMPABLE") == std::string::npos || what.find("RLIMIT_CORE was set to 0") == std::string::npos) return 8;
      }
    }
    return 0;
  });
  INFO(r.describe());
  CHECK(r.exit_code == 0);
}

namespace {

// A child in `dir` that optionally hardens, then aborts. True if a core
// file appeared.
bool aborts_with_core(const std::string& dir, const harden_options* options) {
  const auto r = proof::run_child(
      [&] {
        if (chdir(dir.c_str()) != 0) return 2;
        if (options != nullptr) (void)harden_process(*options);
        std::abort();
      },
      /*allow_core=*/true);
  struct stat st{};
  const std::string path = dir + "/core";
  const bool found = stat(path.c_str(), &st) == 0;
  unlink(path.c_str());
  unlink((path + "." + std::to_string(r.pid)).c_str());
  return found || r.core_dumped;
}

}  // namespace

SM_TEST("a hardened child writes no core file", "[harden][core]") {
  if (const auto why = proof::sanitizer_limit(); !why.empty()) {
    WARN("SKIP: " << why);
    return;
  }
  if (proof::first_line("/proc/sys/kernel/core_pattern") != "core") {
    WARN("SKIP: core_pattern is not \"core\" on this host");
    return;
  }
  const proof::temp_dir dir;
  CHECK(aborts_with_core(dir.path(), nullptr));  // control: this host dumps core
  const harden_options core_only{.disable_core_dumps = true, .disable_ptrace = false};
  const harden_options dumpable_only{.disable_core_dumps = false, .disable_ptrace = true};
  CHECK_FALSE(aborts_with_core(dir.path(), &core_only));  // every platform: RLIMIT_CORE is POSIX
  SM_SKIP_UNLESS(test::tracing_control_here(), "this platform has no tracing control (prctl PR_SET_DUMPABLE)");
  CHECK_FALSE(aborts_with_core(dir.path(), &dumpable_only));  // suid_dumpable 0: no core of a non-dumpable process
  const harden_options both;
  CHECK_FALSE(aborts_with_core(dir.path(), &both));
}

namespace {

// A target process that runs setup(), publishes the address of a marker
// string through `ready`, and waits until `release` is closed.
struct marked_target {
  proof::pipe_pair ready;
  proof::pipe_pair release;
  pid_t pid = -1;
  std::uintptr_t addr = 0;

  explicit marked_target(const std::function<void()>& setup) {
    std::fflush(nullptr);
    pid = fork();
    if (pid == 0) {
      ready.close_read();
      release.close_write();
      setup();
      static const char marker[] = "a marker to read";
      addr = reinterpret_cast<std::uintptr_t>(marker);
      proof::write_all(ready.write_fd, &addr, sizeof addr);
      char c;
      while (read(release.read_fd, &c, 1) > 0) {
      }
      _exit(0);
    }
    ready.close_write();
    release.close_read();
    if (pid > 0 && !proof::read_exact(ready.read_fd, &addr, sizeof addr, 30000)) addr = 0;
  }
  ~marked_target() {
    release.close_write();
    if (pid > 0) proof::wait_child(pid, 30);
  }
  marked_target(const marked_target&) = delete;
  marked_target& operator=(const marked_target&) = delete;

  // True when /proc/PID/mem of the target gives the marker to this process.
  [[nodiscard]] bool readable() const {
    if (addr == 0) return false;
    const int fd = open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[8];
    const bool ok = pread(fd, buf, sizeof buf, static_cast<off_t>(addr)) == sizeof buf && std::memcmp(buf, "a marker", 8) == 0;
    close(fd);
    return ok;
  }
};

// Forks a peer running as uid/gid 65534 that starts a target of the same
// user; the target optionally hardens, then the peer reads the target's
// /proc/PID/mem. Returns 0 readable, 1 refused, other: setup failed.
int peer_reads_target(bool harden) {
  const auto r = proof::run_child([harden] {
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) return 10;
    const marked_target target([harden] {
      prctl(PR_SET_DUMPABLE, 1);  // changing uid cleared it; an ordinary process has it set
      if (harden) (void)harden_process({.disable_core_dumps = false, .disable_ptrace = true});
    });
    if (target.pid < 0 || target.addr == 0) return 11;
    return target.readable() ? 0 : 1;
  });
  return r.exited ? r.exit_code : 99;
}

}  // namespace

SM_TEST("a hardened process's memory is unreadable to a non-root peer of the same user", "[harden]") {
  SM_SKIP_UNLESS(test::tracing_control_here(), "this platform has no tracing control (prctl PR_SET_DUMPABLE)");
  const int control = peer_reads_target(false);
  if (control == 1) {
    WARN("SKIP: this host already forbids same-user /proc/PID/mem reads (e.g. Yama ptrace_scope)");
    return;
  }
  REQUIRE(control == 0);  // without hardening, the peer reads the target
  CHECK(peer_reads_target(true) == 1);
}

SM_TEST("root (CAP_SYS_PTRACE) still reads a hardened process's memory", "[harden]") {
  // Documented limit (docs/security-model.md): PR_SET_DUMPABLE 0 does not
  // stop a process with CAP_SYS_PTRACE in the target's user namespace.
  SM_SKIP_UNLESS(test::tracing_control_here(), "this platform has no tracing control (prctl PR_SET_DUMPABLE)");
  const marked_target target([] { (void)harden_process(); });
  REQUIRE(target.pid > 0);
  REQUIRE(target.addr != 0);
  const bool readable = target.readable();
  if (geteuid() != 0) {
    WARN("SKIP: not running as root");
    return;
  }
  CHECK(readable);
}

SM_TEST("without a tracing control, harden_process says so after the core limit took effect", "[harden]") {
  if (test::tracing_control_here()) {
    WARN("skipped: this platform has a tracing control (" << securememory::detail::os::forbid_tracing_call() << ")");
    return;
  }
  const auto r = test::run_in_child([] {
    const rlimit raised{1 << 20, RLIM_INFINITY};
    if (setrlimit(RLIMIT_CORE, &raised) != 0) return 2;
    try {
      (void)harden_process();
      return 3;  // a silent success would claim what it did not do
    } catch (const securememory::error& e) {
      const std::string what = e.what();
      if (e.code() != errc::protection_failed || e.sys_errno() != ENOSYS) return 4;
      if (what.find("RLIMIT_CORE was set to 0") == std::string::npos || what.find("disable_ptrace = false") == std::string::npos) return 5;
    }
    rlimit now{};
    getrlimit(RLIMIT_CORE, &now);
    if (now.rlim_cur != 0 || now.rlim_max != 0) return 6;
    // What works here: the core limit alone.
    const auto report = harden_process({.disable_core_dumps = true, .disable_ptrace = false});
    if (report.core_limit_changed || report.dumpable_changed || report.previous_dumpable != -1) return 7;
    return 0;
  });
  INFO(r.describe() << " (3: no error, 4: wrong code, 5: message, 6: core limit, 7: core-only call)");
  CHECK(r.exited);
  CHECK(r.exit_code == 0);
}
