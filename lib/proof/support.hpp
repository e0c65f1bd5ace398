// securememory proof internal: helpers shared by the check files.
#pragma once

#include "proof/proof.hpp"

#include <securememory/secret.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <securememory/guarantees.hpp>
#include <string>
#include <vector>

#include <sys/types.h>

namespace securememory::proof {

/// Waits for (and reaps) a child started with fork(), killing it with
/// SIGKILL after timeout_seconds.
child_status wait_child(pid_t pid, int timeout_seconds);

/// The checks, one function each: dumps.cpp, wipe.cpp, pages.cpp,
/// visibility.cpp, lifecycle.cpp, integrity.cpp; checks.cpp holds the table.
result check_core_dumps(const std::string& backend);
result check_gcore(const std::string& backend);
result check_wiping(const std::string& backend);
result check_swap(const std::string& backend);
result check_no_access(const std::string& backend);
result check_at_rest(const std::string& backend);
result check_guard_pages(const std::string& backend);
result check_ptrace(const std::string& backend);
result check_key(const std::string& backend);
result check_fork(const std::string& backend);
result check_memlock(const std::string& backend);
result check_canary(const std::string& backend);
result check_tamper(const std::string& backend);

/// Nothing, when the backend declares `g`; else the not_provided result a
/// check of `g` returns for it.
std::optional<result> undeclared(const std::string& backend, Guarantee g);

/// The page size.
std::size_t page_size();


/// Address of a secret's first byte (read inside with_bytes).
const std::byte* address_of(const Secret& s);


/// Path of gdb's gcore script, or "" when it is not installed.
std::string gcore_path();

/// "ENOENT (No such file or directory)".
std::string errno_string(int err);

/// The first line of a file, or "" when unreadable.
std::string first_line(const std::string& path);

/// "32 B", "1 MiB".
std::string size_label(std::size_t size);

/// A fresh directory under $TMPDIR or /tmp, removed with its files.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

/// A pipe whose ends are closed on destruction.
struct pipe_pair {
  int read_fd = -1;
  int write_fd = -1;
  pipe_pair();
  ~pipe_pair();
  pipe_pair(const pipe_pair&) = delete;
  pipe_pair& operator=(const pipe_pair&) = delete;
  void close_read() noexcept;
  void close_write() noexcept;
};

/// Writes all of buf to fd (retries short writes); false on error.
bool write_all(int fd, const void* buf, std::size_t len) noexcept;
/// Reads exactly len bytes, waiting at most timeout_ms; false on EOF,
/// error or timeout.
bool read_exact(int fd, void* buf, std::size_t len, int timeout_ms) noexcept;

/// How secret bytes get between the parent (which scans) and a child (which
/// holds the secrets) without a copy in either's memory at fork time: a
/// memfd (page cache, never mapped) that the kernel copies into and out of.
///
/// The parent fills the first `size` bytes with getrandom() output (through a
/// buffer it wipes before fork). The child reads them into a heap buffer and
/// calls create() on it (which wipes the buffer), calls create_random(), and
/// writes that secret's bytes to the memfd from inside with_bytes() (pwrite
/// reads them straight from the protected pages). Then it reads both
/// secrets back through a Reader (buffer wiped). So every library path that
/// touches secret bytes has run before the child crashes or is snapshotted.
class secret_exchange {
 public:
  explicit secret_exchange(std::size_t size);
  ~secret_exchange();
  secret_exchange(const secret_exchange&) = delete;
  secret_exchange& operator=(const secret_exchange&) = delete;

  struct held {
    Secret given;   ///< from create()
    Secret random;  ///< from create_random()
  };

  /// In the child. Throws securememory::error, or std::runtime_error when
  /// the memfd cannot be read or written.
  [[nodiscard]] held make_in_child(const std::string& backend) const;

  /// In the parent, once the child has written: the pieces of both secrets.
  /// Throws std::runtime_error when the bytes cannot be read back.
  [[nodiscard]] piece_set pieces() const;

  /// In the parent: the bytes given to create() (caller wipes them).
  [[nodiscard]] std::vector<std::byte> given_bytes() const;

 private:
  [[nodiscard]] std::vector<std::byte> read_back(std::size_t offset) const;
  int fd_ = -1;
  std::size_t size_;
};

/// A forked child that holds an exchange's two secrets (make_in_child) and
/// waits until released; the parent learns the address of the secret made
/// by create(). The destructor releases and reaps it.
class holding_child {
 public:
  holding_child(const secret_exchange& exchange, const std::string& backend);
  ~holding_child();
  holding_child(const holding_child&) = delete;
  holding_child& operator=(const holding_child&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// False when the child failed before holding its secrets.
  [[nodiscard]] bool ready() const noexcept { return address_ != 0; }
  [[nodiscard]] std::uintptr_t address() const noexcept { return address_; }
  /// Lets the child exit and reaps it (once); returns how it ended.
  child_status finish();

 private:
  pipe_pair ready_;
  pipe_pair release_;
  pid_t pid_ = -1;
  std::uintptr_t address_ = 0;
  std::optional<child_status> end_;
};

/// What a forked child (run_child) reports through a pipe: a line of text.
/// The child writes with write_all(report_fd(), ...); the parent reads it
/// with text() after the child ended.
class child_report {
 public:
  child_report() = default;
  [[nodiscard]] int report_fd() const noexcept { return pipe_.write_fd; }
  /// In the parent, after the child ended: everything it wrote.
  std::string text();

 private:
  pipe_pair pipe_;
};

/// Reads every mapping of process `pid` through /proc/PID/mem (as root: no-
/// access pages too; memfd_secret pages read as EIO and are skipped) and
/// counts the pieces found. `scanned` gets the bytes read.
std::size_t pieces_in_process(pid_t pid, const piece_set& pieces, std::size_t* scanned = nullptr);

/// One check per size of secret_sizes(), combined ("32 B: ...; 1 MiB: ...").
template <class Check>
result per_size(Check&& check) {
  std::vector<std::pair<std::string, result>> parts;
  for (const auto size : secret_sizes()) parts.emplace_back(size_label(size), check(size));
  return combine(parts);
}

}  // namespace securememory::proof
