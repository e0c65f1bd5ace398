// securememory internal: the proofs of the guarantees, on the real kernel.
//
// One implementation shared by the test suite (test/guarantees-test.cpp)
// and securememory-audit. Each check runs against one backend by name,
// through the public API plus the lib/os/ observer hook, in forked children
// wherever a crash or a core dump is involved, and returns PASS, FAIL or
// SKIP with a reason. Results and details never contain secret bytes (only
// counts, sizes, addresses and errno texts).
//
// Not part of the installed library; linked into the tests and the audit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <securememory/backend.hpp>

namespace securememory::proof {

// ---- /proc/self/smaps -----------------------------------------------------------

/// One mapping of /proc/self/smaps.
struct smaps_mapping {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  std::string perms;          ///< "r-xp"
  std::size_t locked_kb = 0;  ///< "Locked:"
  std::size_t rss_kb = 0;     ///< "Rss:"
  std::vector<std::string> vm_flags;  ///< "VmFlags:" ("lo", "dd", "wf", ...)
  [[nodiscard]] bool has_flag(std::string_view flag) const;
};

/// Every mapping of this process, in address order (one read of
/// /proc/self/smaps; empty when it cannot be read).
std::vector<smaps_mapping> read_smaps();

// ---- results ------------------------------------------------------------------

/// pass / fail: the backend declares what the check proves, and the proof
/// holds / is contradicted. skip: the host or build cannot run the proof.
/// not_provided: the backend does not declare it (nothing to prove; the
/// detail may say what was measured anyway).
enum class status : unsigned char { pass, fail, skip, not_provided };

/// "PASS", "FAIL", "SKIP", "N/A".
const char* status_name(status s) noexcept;

struct result {
  status state = status::pass;
  std::string detail;  ///< What was measured, or why it failed / was skipped.

  static result pass(std::string d) { return {status::pass, std::move(d)}; }
  static result fail(std::string d) { return {status::fail, std::move(d)}; }
  static result skip(std::string d) { return {status::skip, std::move(d)}; }
  static result not_provided(std::string d) { return {status::not_provided, std::move(d)}; }
};

/// Joins the results of the parts of one check ("32 B: ...; 1 MiB: ..."):
/// FAIL if any part failed, else SKIP if every part skipped, else PASS.
result combine(const std::vector<std::pair<std::string, result>>& parts);

/// One named check.
struct check {
  std::string_view name;   ///< Short column name ("core-dump").
  std::string_view title;  ///< What it proves, one line.
  result (*run)(const std::string& backend);
  /// The guarantee it proves for backends that declare it (their
  /// description); none: a check every backend must pass (round trip).
  std::optional<Guarantee> proves;
};

/// How the named backend describes itself on this host (make_factory
/// throws for an unknown or unavailable one).
BackendDescription description_of(const std::string& backend);

/// Every check, in table order.
std::span<const check> all_checks();

/// The check with that name; nullptr if none.
const check* find_check(std::string_view name);

/// The secret sizes every check uses: 32 bytes and 1 MiB.
std::span<const std::size_t> secret_sizes();

/// Why core-dump and gcore checks cannot run in this build (sanitizer
/// runtimes), or "" when they can.
std::string_view sanitizer_limit();

// ---- host -----------------------------------------------------------------------

/// (name, value) pairs: RLIMIT_MEMLOCK, CAP_IPC_LOCK, RLIMIT_CORE,
/// core_pattern, memfd_secret, gdb, page size, ...
std::vector<std::pair<std::string, std::string>> host_capabilities();

// ---- children -------------------------------------------------------------------

struct child_status {
  pid_t pid = -1;
  bool exited = false;
  int exit_code = -1;
  bool signaled = false;
  int signal = 0;
  bool core_dumped = false;
  bool timed_out = false;  ///< Killed by us after the timeout.
  [[nodiscard]] std::string describe() const;
};

/// Forks; the child runs fn and _exit()s with its value (escaping
/// securememory::error: 100 + errc; other exceptions: 99). SIGSEGV, SIGBUS
/// and SIGABRT are reset to their default action in the child. With
/// allow_core the child's RLIMIT_CORE soft limit is raised to its hard
/// limit, otherwise set to 0. The parent waits (killing the child with
/// SIGKILL after timeout_seconds) and reaps it. Throws std::runtime_error if
/// fork fails.
child_status run_child(const std::function<int()>& fn, bool allow_core = false, int timeout_seconds = 60);

/// Runs fn in a forked child (as run_child) and brings its result back
/// through a pipe. A child that dies before reporting gives a FAIL that says
/// how it died; one that hangs is killed after timeout_seconds.
result run_child_check(const std::function<result()>& fn, int timeout_seconds = 60);

/// In a forked child: drops CAP_IPC_LOCK from the effective, permitted and
/// inheritable sets. False on failure.
bool drop_cap_ipc_lock() noexcept;

// ---- scanning for secret bytes ------------------------------------------------------

/// The secret cut into aligned 8-byte pieces. Any copy of 15 or more
/// consecutive secret bytes contains at least one whole piece, so counting
/// piece occurrences finds every copy at least that long (a 16-byte vector
/// register, a stack spill, a whole page). Pieces that are all one byte
/// value are left out (they would match padding).
class piece_set {
 public:
  void add(std::span<const std::byte> secret);
  /// Number of byte offsets in hay where a piece starts. With offsets, also
  /// appends the first few such offsets.
  [[nodiscard]] std::size_t count_in(std::span<const std::byte> hay, std::vector<std::size_t>* offsets = nullptr) const;
  [[nodiscard]] std::size_t pieces() const noexcept { return sorted_.size(); }

 private:
  std::vector<std::uint64_t> sorted_;
  std::vector<std::uint64_t> filter_;  // bitmap over a hash of the piece
};

/// What a scan of an ELF core file found.
struct core_scan {
  bool is_core = false;          ///< ELF64, ET_CORE, for this machine.
  pid_t pid = -1;                ///< pr_pid of the first NT_PRSTATUS note.
  int signal = 0;                ///< pr_cursig of that note.
  std::size_t file_bytes = 0;
  std::size_t load_segments = 0;
  std::size_t memory_hits = 0;   ///< Piece occurrences inside PT_LOAD file data.
  std::size_t note_hits = 0;     ///< ... inside PT_NOTE data (saved registers etc).
  std::size_t other_hits = 0;    ///< ... elsewhere in the file (headers, padding).
  std::vector<std::uint64_t> memory_hit_addresses;  ///< Virtual addresses of the first memory hits.
  std::string error;             ///< Why the file could not be scanned, or "".
};

/// Reads and scans the core file at path.
core_scan scan_core_file(const std::string& path, const piece_set& pieces);

// ---- wiping ---------------------------------------------------------------------------

/// Watches the `size` bytes at `data` (a secret's memory) from construction
/// to finish(): every unmapping of them is inspected at that moment (lib/os
/// unmap observer, and an interposed munmap for other libraries' calls), and
/// finish() inspects what is still mapped. PASS when every byte was zero
/// when it was given back. One watch at a time per process.
class wipe_watch {
 public:
  wipe_watch(const std::byte* data, std::size_t size);
  ~wipe_watch();
  wipe_watch(const wipe_watch&) = delete;
  wipe_watch& operator=(const wipe_watch&) = delete;
  /// Stops watching and judges.
  result finish();

 private:
  void disarm() noexcept;
  struct state;
  std::unique_ptr<state> state_;
  std::size_t size_;
};

// ---- single measurements (the checks are made of these) -------------------------------

/// Where the child aborts in the kernel core-dump check.
enum class core_state : unsigned char { idle, inside_with_bytes, after_close };
const char* core_state_name(core_state s) noexcept;

/// One kernel core dump: a child creates a secret with create() (bytes the
/// parent chose) and one with create_random() (bytes written out to the
/// parent through a memfd by the kernel, from inside with_bytes), reads both
/// through with_bytes and a Reader, then aborts in `state`. The result
/// detail gives the hits; scan is filled when a core was scanned.
result kernel_core_dump(const std::string& backend, std::size_t size, core_state state, core_scan* scan = nullptr);

/// gcore of a live child holding a secret (created as above), idle.
result live_gcore(const std::string& backend, std::size_t size, core_scan* scan = nullptr);

}  // namespace securememory::proof
