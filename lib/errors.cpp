// securememory: the "securememory" error category and error helpers.
//
// Theory of operation: every failure is a securememory::error carrying an
// errc from this category; when a system call caused it, the errno is kept
// in sys_errno() and named in the message. Messages describe sizes, limits
// and calls, never contents.
#include "internal.hpp"
#include "os/os.hpp"

#include <cerrno>
#include <securememory/secret.hpp>

#include <array>
#include <cstdint>
#include <limits>
#include <sys/mman.h>

namespace securememory {
namespace {

class category_impl final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "securememory"; }
  [[nodiscard]] std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::closed: return "secret is closed";
      case errc::invalid_size: return "invalid secret size";
      case errc::memlock_limit: return "cannot lock memory (RLIMIT_MEMLOCK)";
      case errc::out_of_memory: return "out of memory";
      case errc::protection_failed: return "memory protection failed";
      case errc::unknown_backend: return "unknown backend";
      case errc::duplicate_backend: return "duplicate backend";
      case errc::backend_unavailable: return "backend unavailable on this host";
      case errc::reentrant_close: return "close() called from inside the secret's own access callback";
      case errc::integrity_violation: return "integrity violation: memory next to a secret was overwritten, or its stored form altered";
      case errc::release_failed: return "secret wiped, but its memory could not be released";
      case errc::invalid_argument: return "invalid argument";
      case errc::read_failed: return "reading a secret's bytes failed or ended early";
    }
    return "unknown securememory error";
  }
};

}  // namespace

const std::error_category& category() noexcept {
  static const category_impl instance;
  return instance;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

error::error(errc e, const std::string& what, int sys_errno)
    : std::system_error(make_error_code(e), what), sys_errno_(sys_errno) {}

namespace detail {

void throw_os_error(errc e, const char* what, const char* call, int err, const std::string& hint) {
  std::array<char, 128> buf{};
  std::string msg = fmt::format("{}: {} failed: {}", what, call, os::errno_text(err, buf.data(), buf.size()));
  if (!hint.empty()) msg += ". " + hint;
  throw error(e, msg, err);
}

void throw_null_callback() {
  throw error(errc::invalid_argument, "with_bytes: the callback is null; pass a function to call with the bytes");
}

std::string quoted(std::string_view name) {
  constexpr std::size_t shown = 64;
  std::string out = "\"";
  for (const char c : name.substr(0, shown)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  out += name.size() > shown ? "...\"" : "\"";
  return out;
}

std::size_t round_to_pages(std::size_t size, std::size_t extra) {
  const std::size_t page = os::page_size();
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
  if (size == 0) throw error(errc::invalid_size, "secret size must be at least 1 byte");
  if (size > max - extra || size + extra > max - (page - 1)) {
    throw error(errc::invalid_size,
                fmt::format("secret size {} is too large: rounding it to whole pages overflows", size));
  }
  return (size + extra + page - 1) / page * page;
}

void protect_pages(void* addr, std::size_t length, region& r, access a) {
  if (os::protect(addr, length, page_protection(a)) != 0) {
    const int err = errno;
    throw_os_error(errc::protection_failed, "cannot change a secret's memory protection", "mprotect", err);
  }
  r.current = a;
}

}  // namespace detail
}  // namespace securememory
