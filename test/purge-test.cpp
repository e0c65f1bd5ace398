// Emergency purge: purge() closes every live secret of every backend at
// once, never waits, never deadlocks (inside a callback or a violation
// handler included), and leaves nothing root could read; purge_on_signals()
// wipes every secret from a signal handler, then lets the signal take its
// previous course. Everything that changes signal dispositions or must be
// read from outside runs in a forked child.
#include "support.hpp"

#include "proof/support.hpp"

#include <securememory/purge.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

using securememory::errc;
using securememory::Secret;
namespace proof = securememory::proof;

namespace {

std::vector<std::string> available_backends() {
  std::vector<std::string> out;
  for (const auto& name : securememory::backend_names()) {
    if (securememory::backend_available(name)) out.push_back(name);
  }
  return out;
}

// A thread parked inside a with_bytes callback until released; it counts
// the non-zero bytes it can still see when it is released.
class parked_reader {
 public:
  explicit parked_reader(const Secret& s)
      : thread_([this, &s] {
          s.with_bytes([this](std::span<const std::byte> b) {
            inside_.store(true);
            while (!release_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            std::size_t nonzero = 0;
            for (const auto x : b) nonzero += x != std::byte{0} ? 1 : 0;
            seen_nonzero_ = nonzero;
          });
        }) {
    while (!inside_.load()) std::this_thread::yield();
  }
  ~parked_reader() { leave(); }
  parked_reader(const parked_reader&) = delete;
  parked_reader& operator=(const parked_reader&) = delete;
  void leave() {
    release_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] std::size_t seen_nonzero() const { return seen_nonzero_; }

 private:
  std::atomic<bool> inside_{false};
  std::atomic<bool> release_{false};
  std::size_t seen_nonzero_ = 0;
  std::thread thread_;
};

}  // namespace

SM_TEST("purge() closes every live secret of every backend; later accesses are closed", "[purge]") {
  const auto before = securememory::metrics();
  std::vector<Secret> secrets;
  for (const auto& name : available_backends()) {
    auto factory = securememory::make_factory(name);
    secrets.push_back(factory.create_random(32));
    secrets.push_back(factory.create_random(5000));
  }
  auto reader = secrets.front().reader();  // another handle to one of them
  CHECK(securememory::purge() >= secrets.size());
  for (const auto& s : secrets) {
    CHECK(s.is_closed());
    CHECK(test::error_of([&] { s.with_bytes([](std::span<const std::byte>) {}); }) == errc::closed);
  }
  std::array<std::byte, 4> out{};
  CHECK(test::error_of([&] { (void)reader.read(out); }) == errc::closed);
  CHECK(securememory::metrics().in_use == before.in_use);
  CHECK(securememory::metrics().cached_bytes == 0);
  CHECK(securememory::purge() == 0);  // nothing left
  secrets.clear();                    // closing a purged secret is a no-op
}

SM_TEST("purge() does not wait for an access in flight: the callback finishes, then its secret is released", "[purge]") {
  for (const auto& name : available_backends()) {
    CAPTURE(name);
    auto secret = securememory::make_factory(name).create(*std::make_unique<std::vector<std::byte>>(64, std::byte{9}));
    const auto in_use = securememory::metrics().in_use;
    parked_reader reader(secret);
    (void)securememory::purge();  // returns while the reader is still inside
    CHECK(secret.is_closed());
    CHECK(securememory::metrics().in_use == in_use);  // not released under the reader's feet
    reader.leave();
    CHECK(reader.seen_nonzero() == 64);  // it read the secret to the end
    CHECK(securememory::metrics().in_use == in_use - 1);  // released by the last reader
  }
}

SM_TEST("purge() from inside a callback and from a violation handler: no deadlock", "[purge]") {
  const test::violation_settings_guard restore;
  auto factory = securememory::make_factory("memguard");
  auto own = factory.create_random(32);
  auto other = factory.create_random(32);
  own.with_bytes([&](std::span<const std::byte> b) {
    (void)securememory::purge();
    CHECK(b.size() == 32);  // still readable until the callback returns
  });
  CHECK(own.is_closed());
  CHECK(other.is_closed());
  // From the handler of a violation found on open: that secret is left to
  // its policy (quarantine), every other one is purged.
  auto corrupted = factory.create_random(32);
  auto bystander = factory.create_random(32);
  securememory::set_violation_handler([](const securememory::Violation&) { (void)securememory::purge(); });
  securememory::set_violation_policy(securememory::ViolationPolicy::quarantine);
  test::corrupt_canary(corrupted);
  CHECK(test::error_of([&] { corrupted.verify(); }) == errc::integrity_violation);
  CHECK(bystander.is_closed());
  CHECK(corrupted.is_closed());
}

SM_TEST("after purge(), root reading the whole process finds none of its secrets", "[purge][kernel]") {
  for (const auto& name : available_backends()) {
    CAPTURE(name);
    for (const bool purge : {false, true}) {  // the control finds the page backends' secrets
      CAPTURE(purge);
      const proof::secret_exchange exchange(4096);
      proof::pipe_pair ready;
      proof::pipe_pair release;
      const pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        ready.close_read();
        release.close_write();
        try {
          auto held = exchange.make_in_child(name);
          if (purge) (void)securememory::purge();
          (void)proof::write_all(ready.write_fd, "r", 1);
          char c;
          while (read(release.read_fd, &c, 1) > 0) {
          }
        } catch (...) {
          _exit(2);
        }
        _exit(0);
      }
      ready.close_write();
      release.close_read();
      char c = 0;
      REQUIRE(proof::read_exact(ready.read_fd, &c, 1, 60000));
      const std::size_t hits = proof::pieces_in_process(pid, exchange.pieces());
      release.close_write();
      const auto end = proof::wait_child(pid, 30);
      CHECK(end.exited);
      if (purge) {
        CHECK(hits == 0);
      } else if (securememory::make_factory(name).guarantees().no_access_while_idle &&
                 !securememory::make_factory(name).guarantees().outside_direct_map) {
        CHECK(hits > 0);  // the control: mprotect does not stop root
      }
    }
  }
}

namespace {

// A program's own handler for SIGUSR1, in place before purge_on_signals():
// it reports, then keeps the process alive for the parent to read it.
std::atomic<int> report_fd{-1};
void program_handler(int) {
  (void)!write(report_fd.load(), "p", 1);
  for (;;) pause();
}

}  // namespace

TEST_CASE("purge_on_signals: the signal wipes every secret, even with threads inside callbacks, then takes its previous course", "[purge][signal]") {
  // Default disposition: the process ends as SIGTERM would.
  const auto killed = test::run_in_child([] {
    signal(SIGTERM, SIG_DFL);  // the test runner's own handler is not the default this checks
    securememory::purge_on_signals({SIGTERM});
    std::vector<Secret> held;
    for (const auto& name : available_backends()) held.push_back(securememory::make_factory(name).create_random(32));
    const parked_reader inside(held.front());
    raise(SIGTERM);
    return 3;  // not reached
  });
  INFO(killed.describe());
  CHECK(killed.signaled);
  CHECK(killed.signal == SIGTERM);

  // A previous handler of the program's runs after the wipe; while it
  // holds the process, root reads it and finds no secret.
  for (const auto& name : available_backends()) {
    CAPTURE(name);
    const proof::secret_exchange exchange(4096);
    proof::pipe_pair reports;
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      reports.close_read();
      report_fd = reports.write_fd;
      struct sigaction mine {};
      mine.sa_handler = program_handler;
      sigemptyset(&mine.sa_mask);
      sigaction(SIGUSR1, &mine, nullptr);
      try {
        securememory::purge_on_signals({SIGUSR1});
        auto held = exchange.make_in_child(name);
        const parked_reader inside(held.given);  // a thread inside a callback at the signal
        (void)!write(reports.write_fd, "r", 1);
        raise(SIGUSR1);
      } catch (...) {
        _exit(2);
      }
      _exit(3);  // not reached: the program's handler holds the process
    }
    reports.close_write();
    std::array<char, 2> got{};
    const bool ready = proof::read_exact(reports.read_fd, got.data(), 2, 60000);
    std::size_t hits = 1;
    if (ready) hits = proof::pieces_in_process(pid, exchange.pieces());
    kill(pid, SIGKILL);
    (void)proof::wait_child(pid, 30);
    CHECK(ready);
    CHECK(std::string(got.data(), 2) == "rp");  // ready, then the program's own handler ran
    CHECK(hits == 0);
  }
}

TEST_CASE("purge_on_signals: nothing is installed unless asked, and uncatchable signals are refused", "[purge][signal]") {
  const auto c = test::run_in_child([] {
    for (const int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1}) signal(sig, SIG_DFL);  // not the test runner's
    auto s = securememory::make_factory("protectedmemory").create_random(32);
    (void)securememory::purge();
    struct sigaction now {};
    for (const int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1}) {
      sigaction(sig, nullptr, &now);
      if (now.sa_handler != SIG_DFL) return 10 + sig;
    }
    if (test::error_of([] { securememory::purge_on_signals({SIGTERM, SIGKILL}); }) != errc::invalid_argument) return 2;
    sigaction(SIGTERM, nullptr, &now);
    if (now.sa_handler != SIG_DFL) return 3;  // refused as a whole: nothing installed
    if (test::error_of([] { securememory::purge_on_signals({0}); }) != errc::invalid_argument) return 4;
    return 0;
  });
  INFO(c.describe());
  CHECK(c.exited);
  CHECK(c.exit_code == 0);
}
