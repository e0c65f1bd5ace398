// securememory proof: core dumps (the kernel's and gdb's gcore), scanned for
// the secret's bytes.
//
// Theory of operation. A child learns its secrets through secret_exchange
// (support.hpp), so the parent knows every byte without either process
// holding a copy at fork time. The child raises its own RLIMIT_CORE to the
// hard limit (process-wide dump disabling stays OFF: only the per-region
// exclusion is under test), runs in a fresh temporary directory (the cwd the
// kernel writes `core` / `core.PID` into), and aborts idle, from inside
// with_bytes, or after close. The parent checks that the file is an ELF core
// whose NT_PRSTATUS names that child, then counts occurrences of the
// secrets' 8-byte pieces in the memory segments (PT_LOAD), in the notes
// (PT_NOTE: saved registers, including the vector registers) and elsewhere.
// Pass: zero in memory. Note hits are reported (and asserted by the tests
// for the states where no access is in progress).
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <elf.h>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/procfs.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

namespace securememory::proof {

std::string_view sanitizer_limit() {
  // What these builds change: the sanitizer runtime reserves terabytes of
  // shadow address space and (ASan) turns core dumps off by default, and the
  // instrumented code copies memory through the runtime's own routines. A
  // core of such a build would measure the sanitizer, not the code that
  // ships, so the plain build runs these proofs.
#if defined(__SANITIZE_ADDRESS__)
  return "built with AddressSanitizer: its runtime reserves terabytes of shadow memory, disables core dumps by default "
         "and copies memory through its own routines, so a core would measure the sanitizer, not the shipped code; the "
         "plain build runs this proof";
#elif defined(__SANITIZE_THREAD__)
  return "built with ThreadSanitizer: its runtime reserves terabytes of shadow memory and intercepts memory copies, "
         "so a core would measure the sanitizer, not the shipped code; the plain build runs this proof";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
  return "built with a sanitizer runtime: a core would measure the sanitizer, not the shipped code; the plain build "
         "runs this proof";
#else
  return "";
#endif
#else
  return "";
#endif
}

namespace {

std::string mib(std::size_t bytes) {
  constexpr std::size_t mebi = std::size_t{1} << 20U;
  return std::to_string(bytes / mebi) + "." + std::to_string(bytes % mebi * 10 / mebi) + " MiB";
}

// "0x7ffd...([stack])" for the first hit addresses, named by the mapping
// that holds them in this process (children share the parent's layout).
std::string where(const std::vector<std::uint64_t>& addresses) {
  std::string out;
  for (const auto a : addresses) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    std::string name = "unmapped here";
    while (std::getline(maps, line)) {
      const auto dash = line.find('-');
      const auto space = line.find(' ');
      if (dash == std::string::npos || space == std::string::npos) continue;
      const auto lo = std::stoull(line.substr(0, dash), nullptr, 16);
      const auto hi = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
      if (a < lo || a >= hi) continue;
      const auto slash = line.find_first_of("/[");
      name = slash == std::string::npos ? "anonymous" : line.substr(slash);
      break;
    }
    std::array<char, 16> hex{};
    const auto printed = std::to_chars(hex.data(), hex.data() + hex.size(), a, 16);
    out += (out.empty() ? "0x" : " 0x") + std::string(hex.data(), printed.ptr) + " (" + name + ")";
  }
  return out;
}

std::string hits_text(const core_scan& s) {
  std::string t = std::to_string(s.memory_hits) + " pieces in memory segments, " + std::to_string(s.note_hits) +
                  " in notes (saved registers)";
  if (s.other_hits != 0) t += ", " + std::to_string(s.other_hits) + " elsewhere";
  if (!s.memory_hit_addresses.empty()) t += ", in memory at " + where(s.memory_hit_addresses);
  return t + " (core " + mib(s.file_bytes) + ", " + std::to_string(s.load_segments) + " segments)";
}

// The file name the kernel gives a core of `pid` dumped in its cwd, or ""
// with *why set when core_pattern cannot be predicted or is not a file in
// the cwd.
std::string core_file_name(pid_t pid, std::string* why) {
  const std::string pattern = first_line("/proc/sys/kernel/core_pattern");
  if (pattern.empty()) {
    *why = "cannot read /proc/sys/kernel/core_pattern";
    return "";
  }
  if (pattern[0] == '|') {
    *why = "core_pattern pipes cores to a program (\"" + pattern.substr(0, 60) +
           "\"): the kernel writes no file this check can find; set kernel.core_pattern=core to run it";
    return "";
  }
  if (pattern.find('/') != std::string::npos) {
    *why = "core_pattern writes to a path (\"" + pattern.substr(0, 60) +
           "\"), not the crashing process's cwd; set kernel.core_pattern=core to run this check";
    return "";
  }
  std::string name;
  bool has_pid = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '%') {
      name += pattern[i];
      continue;
    }
    if (i + 1 >= pattern.size()) break;
    const char spec = pattern[++i];
    if (spec == '%') {
      name += '%';
    } else if (spec == 'p' || spec == 'P') {
      name += std::to_string(pid);
      has_pid = true;
    } else {
      *why = std::string("core_pattern uses %") + spec + ", which this check does not expand; set kernel.core_pattern=core";
      return "";
    }
  }
  if (!has_pid && first_line("/proc/sys/kernel/core_uses_pid") == "1") name += "." + std::to_string(pid);
  return name;
}

}  // namespace

std::string core_dump_limit() {
  if (const auto s = sanitizer_limit(); !s.empty()) return std::string(s);
  std::string why;
  (void)core_file_name(1, &why);
  if (!why.empty()) return why;
  rlimit core{};
  getrlimit(RLIMIT_CORE, &core);
  if (core.rlim_max != RLIM_INFINITY && core.rlim_max < (rlim_t{64} << 20U)) {
    return "RLIMIT_CORE's hard limit is " + std::to_string(core.rlim_max) +
           " bytes: a child cannot raise it far enough to dump core (raise the hard limit, e.g. ulimit -Hc unlimited)";
  }
  return "";
}

namespace {

std::string exit_meaning(const child_status& c) {
  if (c.exited && c.exit_code >= 100) {
    return c.describe() + " (securememory::error " + make_error_code(static_cast<errc>(c.exit_code - 100)).message() + ")";
  }
  if (c.exited && c.exit_code == 99) return c.describe() + " (an exception other than securememory::error)";
  return c.describe();
}

}  // namespace

result scan_aborted_child(const std::function<int()>& body, const std::function<piece_set()>& pieces, core_scan& scan) {
  if (const auto why = core_dump_limit(); !why.empty()) return result::skip(why);
  const temp_dir dir;
  const std::string& cwd = dir.path();
  const auto child = run_child(
      [&]() -> int {
        if (chdir(cwd.c_str()) != 0) return 2;
        return body();
      },
      /*allow_core=*/true);
  if (!child.signaled || child.signal != SIGABRT) {
    return result::fail("the child did not abort as planned: " + exit_meaning(child));
  }
  std::string why;
  const std::string path = cwd + "/" + core_file_name(child.pid, &why);
  struct stat st{};
  if (stat(path.c_str(), &st) != 0) {
    return result::fail("no core file was written (" + child.describe() + ", looked for " + path +
                        "): this host did not dump core although core_pattern and RLIMIT_CORE allow it");
  }
  scan = scan_core_file(path, pieces());
  unlink(path.c_str());
  if (!scan.is_core || !scan.error.empty()) return result::fail("core file unusable: " + scan.error);
  if (scan.pid != child.pid || scan.signal != SIGABRT) {
    return result::fail("the core is not this child's SIGABRT core (pid " + std::to_string(scan.pid) + ", signal " +
                        std::to_string(scan.signal) + ")");
  }
  return result::pass(hits_text(scan));
}

result kernel_core_dump(const std::string& backend, std::size_t size, core_state state, core_scan* scan_out) {
  if (const auto why = core_dump_limit(); !why.empty()) return result::skip(why);
  const secret_exchange exchange(size);
  core_scan scan;
  result scanned = scan_aborted_child(
      [&]() -> int {
        auto held = exchange.make_in_child(backend);
        switch (state) {
          case core_state::idle: std::abort();
          case core_state::inside_with_bytes:
            held.given.with_bytes([&](std::span<const std::byte>) {
              held.random.with_bytes([](std::span<const std::byte>) { std::abort(); });
            });
            return 3;
          case core_state::after_close:
            held.given.close();
            held.random.close();
            std::abort();
        }
        return 4;
      },
      [&] { return exchange.pieces(); }, scan);
  if (scan_out != nullptr) *scan_out = scan;
  if (scanned.state != status::pass) return scanned;
  if (scan.memory_hits != 0 || scan.other_hits != 0) return result::fail("secret bytes in the core: " + scanned.detail);
  return scanned;
}

namespace {

std::string find_in_path(const std::string& program) {
  const char* path = std::getenv("PATH");  // NOLINT(concurrency-mt-unsafe): the proof programs never change the environment
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    std::string candidate = dirs.substr(start, end - start) + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

// Runs argv with stdin/stdout/stderr on /dev/null; returns its status.
child_status run_program(const std::vector<std::string>& argv, int timeout_seconds) {
  (void)std::fflush(nullptr);  // best effort: a failed flush only risks a repeated line
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed: " + errno_string(errno));
  if (pid == 0) {
    const int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return wait_child(pid, timeout_seconds);
}

}  // namespace

std::string gcore_path() { return find_in_path("gcore"); }

result live_gcore(const std::string& backend, std::size_t size, core_scan* scan_out) {
  if (const auto s = sanitizer_limit(); !s.empty()) return result::skip(std::string(s));
  const std::string gcore = gcore_path();
  if (gcore.empty()) return result::skip("gdb's gcore is not installed (apt-get install gdb)");
  const temp_dir dir;
  const secret_exchange exchange(size);
  holding_child child(exchange, backend);
  const pid_t pid = child.pid();
  child_status snap{};
  if (child.ready()) snap = run_program({gcore, "-o", dir.path() + "/live", std::to_string(pid)}, 180);
  const auto end = child.finish();
  if (!child.ready()) return result::fail("the child did not get ready: " + exit_meaning(end));
  const std::string path = dir.path() + "/live." + std::to_string(pid);
  struct stat st{};
  if (!snap.exited || snap.exit_code != 0 || stat(path.c_str(), &st) != 0) {
    return result::fail("gcore did not produce a core (" + snap.describe() + ")");
  }
  const core_scan scan = scan_core_file(path, exchange.pieces());
  unlink(path.c_str());
  if (scan_out != nullptr) *scan_out = scan;
  if (!scan.is_core || !scan.error.empty()) return result::fail("core file unusable: " + scan.error);
  if (scan.pid != pid) return result::fail("the core is not this child's (pid " + std::to_string(scan.pid) + ")");
  const std::string text = hits_text(scan);
  if (scan.memory_hits != 0 || scan.other_hits != 0) return result::fail("secret bytes in the snapshot: " + text);
  return result::pass(text);
}

result check_core_dumps(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::excluded_from_core_dumps)) return *no;
  std::vector<std::pair<std::string, result>> parts;
  if (const auto why = core_dump_limit(); !why.empty()) return result::skip(why);
  for (const std::size_t size : secret_sizes()) {
    for (const auto state : {core_state::idle, core_state::inside_with_bytes, core_state::after_close}) {
      parts.emplace_back(size_label(size) + " " + core_state_name(state), kernel_core_dump(backend, size, state));
    }
  }
  return combine(parts);
}

result check_gcore(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::excluded_from_core_dumps)) return *no;
  if (const auto s = sanitizer_limit(); !s.empty()) return result::skip(std::string(s));
  if (gcore_path().empty()) return result::skip("gdb's gcore is not installed (apt-get install gdb)");
  std::vector<std::pair<std::string, result>> parts;
  for (const std::size_t size : secret_sizes()) parts.emplace_back(size_label(size), live_gcore(backend, size));
  return combine(parts);
}

}  // namespace securememory::proof
