// fork() while another thread uses the library for the first time, in a
// fresh process each round (run by `meson test` as `first-use-fork`).
//
// A function-local static whose initialiser another thread is running when
// the process forks stays "being initialised" in the child for ever: the
// child's first use of it waits for a thread that does not exist there. The
// library makes its process-wide objects while it loads (made_at_load);
// this program checks that, for every object a child may need: the log
// sink, the violation handler, the registries and backends, the page caches,
// the state pool, libsodium, the random generator, the C API's strings.
//
// Without arguments it runs ROUNDS (default 40) rounds: each execs this
// program with --once in a new process, which starts a thread making the
// library's first calls and forks at once; the child makes the same calls.
// A child not done within 5 s is a hang. Prints one line per failed round
// and a summary; exit status 0 when every round passed.
#include <securememory/securememory.h>
#include <securememory/securememory.hpp>

#include "internal.hpp"
#include "proof/support.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unistd.h>

namespace {

// Everything a program does first with the library, through every object
// that is made once per process.
void first_calls() {
  securememory::detail::log_error("first use: a message (the log sink)");
  (void)securememory::metrics();
  for (const auto& name : securememory::backend_names()) {
    if (!securememory::backend_available(name)) continue;
    auto f = securememory::make_factory(name);
    auto s = f.create_random(32);  // the generator, the state pool, the backend
    (void)s.with_bytes([](std::span<const std::byte> b) { return b.size(); });
    s.close();  // the page cache
  }
  (void)securememory::set_violation_handler(nullptr);
  securememory_factory* f = nullptr;
  if (securememory_factory_new("protectedmemory", &f) == 0) {
    (void)securememory_factory_backend(f);  // the C API's strings
    securememory_factory_free(f);
  }
  (void)securememory_error_message(SECUREMEMORY_E_CLOSED);
}

// Waits for pid up to `seconds` (the proof library's wait, which kills it
// after). True when it exited 0; otherwise `what` says how it ended.
bool waited(pid_t pid, int seconds, std::string& what) {
  const auto c = securememory::proof::wait_child(pid, seconds);
  if (c.exited && c.exit_code == 0) return true;
  what = c.describe();
  return false;
}

// One round, in a fresh process: a thread makes the first calls while the
// main thread forks.
int once() {
  // The first calls log on purpose: keep the lines out of the test's output.
  (void)!std::freopen("/dev/null", "w", stderr);
  std::atomic<bool> go{false};
  std::thread first([&] {
    go = true;
    first_calls();
  });
  while (!go.load()) {
  }
  const pid_t pid = fork();
  if (pid < 0) return 2;
  if (pid == 0) {
    first_calls();
    _exit(0);
  }
  std::string what;
  const bool ok = waited(pid, 5, what);
  first.join();
  if (!ok) std::printf("the child %s\n", what.c_str());
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--once") == 0) return once();
  const char* rounds_text = std::getenv("ROUNDS");
  const int rounds = rounds_text != nullptr ? std::atoi(rounds_text) : 40;
  int failed = 0;
  for (int i = 0; i < rounds; ++i) {
    std::fflush(stdout);
    const pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
      execl("/proc/self/exe", argv[0], "--once", static_cast<char*>(nullptr));
      _exit(127);
    }
    std::string what;
    if (!waited(pid, 30, what)) {
      ++failed;
      std::printf("round %d: %s\n", i, what.c_str());
    }
  }
  std::printf("first-use-fork: %d rounds, %d failed\n", rounds, failed);
  return failed == 0 ? 0 : 1;
}
