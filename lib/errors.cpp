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

#include <algorithm>
#include <array>
#include <cstdint>

namespace securememory {
namespace {

class category_impl final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "securememory"; }
  [[nodiscard]] std::string message(int value) const override {
    switch (static_cast<Errc>(value)) {
      case Errc::closed: return "secret is closed";
      case Errc::invalid_size: return "invalid secret size";
      case Errc::memlock_limit: return "cannot lock memory (RLIMIT_MEMLOCK)";
      case Errc::out_of_memory: return "out of memory";
      case Errc::protection_failed: return "memory protection failed";
      case Errc::unknown_backend: return "unknown backend";
      case Errc::duplicate_backend: return "duplicate backend";
      case Errc::backend_unavailable: return "backend unavailable on this host";
      case Errc::reentrant_close: return "close() called from inside the secret's own access callback";
      case Errc::integrity_violation: return "integrity violation: memory next to a secret was overwritten, or its stored form altered";
      case Errc::release_failed: return "secret wiped, but its memory could not be released";
      case Errc::invalid_argument: return "invalid argument";
      case Errc::read_failed: return "reading a secret's bytes failed or ended early";
    }
    return "unknown securememory error";
  }
  [[nodiscard]] std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<Errc>(value)) {
      case Errc::closed: return std::errc::bad_file_descriptor;
      case Errc::invalid_size:
      case Errc::invalid_argument:
      case Errc::unknown_backend: return std::errc::invalid_argument;
      case Errc::memlock_limit:
      case Errc::out_of_memory: return std::errc::not_enough_memory;
      case Errc::protection_failed: return std::errc::permission_denied;
      case Errc::duplicate_backend: return std::errc::file_exists;
      case Errc::backend_unavailable: return std::errc::not_supported;
      case Errc::reentrant_close: return std::errc::resource_deadlock_would_occur;
      case Errc::integrity_violation: return std::errc::state_not_recoverable;
      case Errc::release_failed:
      case Errc::read_failed: return std::errc::io_error;
    }
    return {value, *this};
  }
};

}  // namespace

const std::error_category& category() noexcept {
  static const category_impl instance;
  return instance;
}

std::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), category()}; }

std::string_view to_string(Errc e) noexcept {
  switch (e) {
    case Errc::closed: return "closed";
    case Errc::invalid_size: return "invalid_size";
    case Errc::memlock_limit: return "memlock_limit";
    case Errc::out_of_memory: return "out_of_memory";
    case Errc::protection_failed: return "protection_failed";
    case Errc::unknown_backend: return "unknown_backend";
    case Errc::duplicate_backend: return "duplicate_backend";
    case Errc::backend_unavailable: return "backend_unavailable";
    case Errc::reentrant_close: return "reentrant_close";
    case Errc::integrity_violation: return "integrity_violation";
    case Errc::release_failed: return "release_failed";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::read_failed: return "read_failed";
  }
  return "unknown";
}

Error::Error(Errc e, const std::string& what, int sys_errno)
    : std::system_error(make_error_code(e), what), sys_errno_(sys_errno) {}

namespace {
// Trivially destructible (no allocation, usable until the thread is gone);
// a longer message is cut (messages name sizes, calls and quoted names of
// at most 64 bytes, so this does not happen in practice).
constexpr std::size_t last_message_capacity = 1024;
constinit thread_local std::array<char, last_message_capacity> last_message{};
constinit thread_local std::size_t last_message_size = 0;
}  // namespace

std::string_view last_error_message() noexcept { return {last_message.data(), last_message_size}; }

namespace detail {

void set_error_code(std::error_code& ec, const std::exception& e) noexcept {
  if (const auto* ours = dynamic_cast<const Error*>(&e)) {
    ec = ours->code();
  } else if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    ec = make_error_code(Errc::out_of_memory);
  } else {
    ec = make_error_code(Errc::invalid_argument);
  }
  const std::string_view what = e.what();
  last_message_size = std::min(what.size(), last_message_capacity);
  std::copy_n(what.data(), last_message_size, last_message.data());
}

}  // namespace detail

namespace detail {

void throw_os_error(errc e, const char* what, const char* call, int err, const std::string& hint) {
  std::array<char, 128> buf{};
  std::string msg = fmt::format("{}: {} failed: {}", what, call, os::errno_text(err, buf.data(), buf.size()));
  if (!hint.empty()) msg += ". " + hint;
  throw error(e, msg, err);
}

void throw_null_callback() {
  throw Error(Errc::invalid_argument, "with_bytes: the callback is null; pass a function to call with the bytes");
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

}  // namespace detail
}  // namespace securememory
