// Exit-time program (run and judged by test/exit-check.py): secrets held in
// static, function-local static and thread_local objects, a Reader in a
// static, and an atexit handler, all closed while the process exits. The
// library's own globals (registry, logger, counters, backend instances) must
// outlive every one of them (Botan #761 crashed here).
//
// Theory of operation: `last_check` is the first object constructed, so it
// is destroyed last; by then every other holder has closed its secret, and
// it checks that the counters are back to zero. The first holder constructed
// after it closes with an injected munmap failure, so the library must still
// log through its logger during exit. Every holder checks its bytes before
// closing. With --c-sink, main first installs a C log sink
// (securememory_set_log_sink) that writes "c-sink: LEVEL MESSAGE" lines to
// stderr: the C sink, too, must be called during exit. Any failure prints a line starting with "FAIL" and ends the
// process with _exit(3); success ends with "exit: all secrets closed".
#include <securememory/securememory.h>
#include <securememory/securememory.hpp>

#include "os/os.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <array>
#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::printf("FAIL %s\n", what.c_str());
  std::fflush(stdout);
  _exit(3);
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((seed * 31U + i * 7U) | 1U);
  return v;
}

// Destroyed last: every secret must be closed by then.
struct last_check {
  last_check() = default;
  last_check(const last_check&) = delete;
  last_check& operator=(const last_check&) = delete;
  ~last_check() {
    const auto m = securememory::metrics();
    if (m.in_use != 0 || m.locked_bytes != 0) {
      fail("at exit: in_use " + std::to_string(m.in_use) + ", locked_bytes " + std::to_string(m.locked_bytes));
    }
    // The library still works at this point: the registry, a backend, the counters.
    auto late = securememory::make_factory("protectedmemory").create_random(16);
    late.close();
    if (securememory::metrics().in_use != 0) fail("a secret made during the last destructor was not released");
    std::printf("exit: all secrets closed (in_use 0, locked_bytes 0, %llu created)\n",
                static_cast<unsigned long long>(securememory::metrics().allocated));
    std::fflush(stdout);
  }
};
last_check last;  // NOLINT(cert-err58-cpp): the first static of this program, on purpose

// A secret with known bytes that checks them, then closes, when destroyed.
class holder {
 public:
  holder(std::string label, const std::string& backend, unsigned seed, bool fail_munmap = false)
      : label_(std::move(label)), expected_(pattern(40 + seed, seed)), fail_munmap_(fail_munmap) {
    auto source = expected_;
    secret_ = securememory::make_factory(backend).create(source);
  }
  holder(const holder&) = delete;
  holder& operator=(const holder&) = delete;
  holder(holder&&) = default;
  holder& operator=(holder&&) = delete;
  [[nodiscard]] const std::string& label() const { return label_; }
  ~holder() {
    if (secret_.is_closed()) return;  // moved from
    const bool same = secret_.with_bytes([&](std::span<const std::byte> b) {
      return b.size() == expected_.size() && std::equal(b.begin(), b.end(), expected_.begin());
    });
    if (!same) fail(label_ + ": bytes changed");
    if (fail_munmap_) {
      // The destructor's close fails; the library must log it (its logger
      // still exists) and count the secret released.
      securememory::detail::os::set_fault_hook(
          [](securememory::detail::os::call c, void*) noexcept { return c == securememory::detail::os::call::munmap ? EINVAL : 0; },
          nullptr);
      secret_ = securememory::Secret{};
      securememory::detail::os::set_fault_hook(nullptr, nullptr);
    } else {
      secret_.close();
    }
    std::printf("%s: closed ok\n", label_.c_str());
    std::fflush(stdout);
  }

 private:
  std::string label_;
  std::vector<std::byte> expected_;
  bool fail_munmap_;
  securememory::Secret secret_;
};

// Constructed before main, through the registry, before anything else of the
// library was used: the library's function-local globals are created after
// these objects, which is exactly what Botan #761 got wrong.
holder logged_at_exit("static-with-failing-munmap", "protectedmemory", 1, true);

std::vector<holder> make_per_backend() {
  std::vector<holder> v;
  unsigned seed = 10;
  for (const auto& name : securememory::backend_names()) {
    if (securememory::backend_available(name)) v.emplace_back("static[" + name + "]", name, seed++);
  }
  return v;
}
std::vector<holder> per_backend = make_per_backend();

// A reader whose secret is closed before it: it must report closed, not crash.
struct reader_holder {
  reader_holder() : secret(securememory::make_factory("protectedmemory").create_random(8)), reader(secret.reader()) {}
  reader_holder(const reader_holder&) = delete;
  reader_holder& operator=(const reader_holder&) = delete;
  ~reader_holder() {
    secret.close();
    std::array<std::byte, 8> out{};
    try {
      (void)reader.read(out);
      fail("a reader of a closed secret read at exit");
    } catch (const securememory::error& e) {
      if (e.code() != securememory::errc::closed) fail("reader at exit: wrong error");
    }
    std::printf("static-reader: closed ok\n");
  }
  securememory::Secret secret;
  securememory::Reader reader;
};
reader_holder static_reader;

thread_local std::unique_ptr<holder> main_thread_local;

void at_exit_handler() {
  auto s = securememory::make_factory().create_random(32);
  if (s.with_bytes([](std::span<const std::byte> b) { return b.size(); }) != 32) fail("atexit: wrong size");
  s.close();
  std::printf("atexit: created and closed ok\n");
}

// The C sink: plain write(2), nothing that could be gone during exit.
void c_sink(int level, const char* message, size_t length, void* /*context*/) {
  const char prefix[] = "c-sink: ";
  const char digit = static_cast<char>('0' + level);
  (void)!write(2, prefix, sizeof prefix - 1);
  (void)!write(2, &digit, 1);
  (void)!write(2, " ", 1);
  (void)!write(2, message, length);
  (void)!write(2, "\n", 1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--c-sink") == 0 && securememory_set_log_sink(c_sink, nullptr) != 0) {
    fail("securememory_set_log_sink");
  }
  std::printf("backends:");
  for (const auto& h : per_backend) std::printf(" %s", h.label().c_str());
  std::printf("\n");
  static holder function_static("function-static", "protectedmemory", 2);
  main_thread_local = std::make_unique<holder>("thread_local(main)", "protectedmemory", 3);
  // A worker thread's thread_local is destroyed when the thread ends.
  std::thread worker([] {
    thread_local holder worker_local("thread_local(worker)", "protectedmemory", 4);
    (void)worker_local;
  });
  worker.join();
  if (std::atexit(at_exit_handler) != 0) fail("atexit registration");
  const auto m = securememory::metrics();
  std::printf("main: returning with %llu secrets open\n", static_cast<unsigned long long>(m.in_use));
  std::fflush(stdout);
  return 0;  // everything else happens during exit
}
