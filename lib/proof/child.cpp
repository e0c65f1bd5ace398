// securememory proof: forked children and small shared helpers.
//
// Theory of operation: run_child() forks, runs a function in the child and
// turns its outcome into an exit code; the parent polls waitpid() so that a
// hung child is killed (SIGKILL) after a timeout and always reaped: the
// audit leaves no process behind. Nothing in a child writes to stdout.
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <securememory/error.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

#include <linux/capability.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace securememory::proof {

const char* status_name(status s) noexcept {
  switch (s) {
    case status::pass: return "PASS";
    case status::fail: return "FAIL";
    case status::skip: return "SKIP";
    case status::not_provided: return "N/A";
  }
  return "?";
}

result combine(const std::vector<std::pair<std::string, result>>& parts) {
  bool any_fail = false;
  bool all_skip = !parts.empty();
  bool none_provided = !parts.empty();
  std::string detail;
  for (const auto& [label, r] : parts) {
    any_fail = any_fail || r.state == status::fail;
    all_skip = all_skip && r.state == status::skip;
    none_provided = none_provided && r.state == status::not_provided;
    if (!detail.empty()) detail += "; ";
    detail += label;
    if (r.state != status::pass) detail += std::string(" ") + status_name(r.state);
    detail += ": " + r.detail;
  }
  if (any_fail) return result::fail(detail);
  if (all_skip) return result::skip(detail);
  if (none_provided) return result::not_provided(detail);
  return result::pass(detail);
}

std::string child_status::describe() const {
  if (timed_out) return "hung; killed after the timeout";
  if (exited) return "exited with " + std::to_string(exit_code);
  if (signaled) {
    return std::string("killed by ") + (sigabbrev_np(signal) != nullptr ? "SIG" + std::string(sigabbrev_np(signal)) : std::to_string(signal)) +
           (core_dumped ? " (core dumped)" : "");
  }
  return "unknown status";
}

namespace {

// Forks after flushing stdio (so that the child cannot print the parent's
// buffered output twice); throws when fork fails.
pid_t fork_flushed() {
  (void)std::fflush(nullptr);  // best effort: a failed flush only risks a repeated line
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed: " + errno_string(errno));
  return pid;
}

// In a new child: core dumps on or off (up to the hard limit), and the
// default action for the signals the checks expect the child to die of.
// Failures are ignored: a child that keeps the parent's settings still
// reports what happened to it.
void prepare_child(bool allow_core) noexcept {
  rlimit core{};
  if (getrlimit(RLIMIT_CORE, &core) == 0) {
    core.rlim_cur = allow_core ? core.rlim_max : 0;
    (void)setrlimit(RLIMIT_CORE, &core);
  }
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (const int sig : {SIGSEGV, SIGBUS, SIGABRT}) (void)sigaction(sig, &default_action, nullptr);
}

}  // namespace

child_status run_child(const std::function<int()>& fn, bool allow_core, int timeout_seconds) {
  const pid_t pid = fork_flushed();
  if (pid == 0) {
    prepare_child(allow_core);
    int code = 98;
    try {
      code = fn();
    } catch (const securememory::error& e) {
      code = 100 + static_cast<int>(e.code_value());
    } catch (...) {
      code = 99;
    }
    _exit(code);  // no static destructors, no stdio flush of the parent's buffers
  }
  return wait_child(pid, timeout_seconds);
}

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): a pid and seconds, named at every call
child_status wait_child(pid_t pid, int timeout_seconds) {
  child_status r;
  r.pid = pid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  int status = 0;
  for (auto pause = std::chrono::microseconds(200);; pause = std::min(pause * 2, std::chrono::microseconds(20000))) {
    const pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) break;
    if (got < 0 && errno != EINTR) throw std::runtime_error("waitpid failed: " + errno_string(errno));
    if (std::chrono::steady_clock::now() > deadline && !r.timed_out) {
      r.timed_out = true;
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::this_thread::sleep_for(pause);
  }
  r.exited = WIFEXITED(status);
  r.exit_code = r.exited ? WEXITSTATUS(status) : -1;
  r.signaled = WIFSIGNALED(status);
  r.signal = r.signaled ? WTERMSIG(status) : 0;
  r.core_dumped = r.signaled && WCOREDUMP(status);
  return r;
}

result run_child_check(const std::function<result()>& fn, int timeout_seconds) {
  pipe_pair channel;
  const pid_t pid = fork_flushed();
  if (pid == 0) {
    channel.close_read();
    prepare_child(false);
    result r;
    try {
      r = fn();
    } catch (const securememory::error& e) {
      r = result::fail(std::string("securememory::error ") + e.code().message() + ": " + e.what());
    } catch (const std::exception& e) {
      r = result::fail(std::string("exception: ") + e.what());
    }
    const char state = static_cast<char>(r.state);
    const bool ok = write_all(channel.write_fd, &state, 1) && write_all(channel.write_fd, r.detail.data(), r.detail.size());
    _exit(ok ? 0 : 1);
  }
  channel.close_write();
  std::string message;
  std::array<char, 512> buf{};
  for (;;) {
    pollfd pfd{channel.read_fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, timeout_seconds * 1000);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;  // timeout: wait_child kills it
    const ssize_t n = ::read(channel.read_fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    message.append(buf.data(), static_cast<std::size_t>(n));
  }
  const auto child = wait_child(pid, timeout_seconds);
  if (message.empty() || !child.exited || child.exit_code != 0) {
    return result::fail("the checking child did not report (" + child.describe() + ")");
  }
  return {static_cast<status>(message[0]), message.substr(1)};
}

bool drop_cap_ipc_lock() noexcept {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, 2> data{};
  if (syscall(SYS_capget, &header, data.data()) != 0) return false;
  const auto bit = 1U << CAP_IPC_LOCK;  // CAP_IPC_LOCK (14) is in the first word
  data[0].effective &= ~bit;
  data[0].permitted &= ~bit;
  data[0].inheritable &= ~bit;
  return syscall(SYS_capset, &header, data.data()) == 0;
}

}  // namespace securememory::proof
