// securememory: the public handles (Secret, Reader, SecretFactory). They
// forward to the state of one secret (lib/secret_state.hpp), whose state
// machine is described at the top of lib/secret_state.cpp.
#include <securememory/secret.hpp>

#include "internal.hpp"
#include "os/os.hpp"
#include "random.hpp"
#include "scrub.hpp"
#include "secret_state.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

namespace securememory {
namespace detail {

void null_callback(std::error_code& ec) noexcept {
  try {
    throw_null_callback();
  } catch (const std::exception& e) {
    set_error_code(ec, e);
  }
}

namespace {

// Runs f, turning an exception into ec (and the thread's last message);
// returns f's result, or a default one on an error.
template <class F>
auto reporting(std::error_code& ec, F&& f) noexcept -> decltype(f()) {
  ec.clear();
  try {
    return f();
  } catch (const std::exception& e) {
    set_error_code(ec, e);
  }
  if constexpr (!std::is_void_v<decltype(f())>) return {};
}

}  // namespace

}  // namespace detail

// --- Secret ---------------------------------------------------------------

Secret::Secret(detail::state_ref s) noexcept : state_(std::move(s)) {}

region detail::region_of(const Secret& s) noexcept { return s.state_ ? s.state_->region_now() : region{}; }

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    if (state_) state_->close_noexcept(detail::innermost_access());
    state_ = std::move(other.state_);
  }
  return *this;
}

Secret::~Secret() {
  if (state_) state_->close_noexcept(detail::innermost_access());
}

std::size_t Secret::size() const noexcept { return state_ ? state_->size() : 0; }
bool Secret::is_closed() const noexcept { return !state_ || state_->is_closed(); }
std::string_view Secret::backend() const noexcept { return state_ ? state_->backend_name() : std::string_view{}; }

void Secret::close() {
  if (state_) state_->close(detail::innermost_access());
}

void Secret::close(std::error_code& ec) noexcept {
  detail::reporting(ec, [&] { close(); });
}

void Secret::verify() const {
  if (!state_) throw Error(Errc::closed, "secret handle is empty (moved from or default-constructed)");
  state_->verify_now();
}

void Secret::verify(std::error_code& ec) const noexcept {
  detail::reporting(ec, [&] { verify(); });
}

Reader Secret::reader() const {
  if (!state_ || state_->is_closed()) throw error(errc::closed, "cannot read a closed secret");
  return Reader(state_);
}

std::optional<Reader> Secret::reader(std::error_code& ec) const noexcept {
  return detail::reporting(ec, [&] { return std::optional<Reader>(reader()); });
}

// --- Reader ---------------------------------------------------------------

Reader::Reader(detail::state_ref s) noexcept : state_(std::move(s)) {}

std::size_t Reader::read(std::span<std::byte> out) {
  const detail::scrub_on_exit scrub;  // the memcpy's registers and stack (scrub.hpp)
  if (!state_ || state_->is_closed()) throw error(errc::closed, "cannot read a closed secret");
  if (out.empty() || offset_ >= state_->size()) return 0;
  detail::access_scope scope(state_);
  const auto bytes = scope.bytes();
  const std::size_t n = std::min(out.size(), bytes.size() - offset_);
  std::memcpy(out.data(), bytes.data() + offset_, n);
  scope.finish();
  offset_ += n;
  return n;
}

std::size_t Reader::read(std::span<std::byte> out, std::error_code& ec) noexcept {
  return detail::reporting(ec, [&] { return read(out); });
}

bool equal(const Secret& a, const Secret& b) {
  const detail::scrub_on_exit scrub;  // sodium_memcmp's registers
  if (a.size() != b.size()) {
    a.verify();  // closed, empty or inherited handles still say so
    b.verify();
    return false;
  }
  return a.with_bytes([&](std::span<const std::byte> x) {
    return b.with_bytes([&](std::span<const std::byte> y) { return sodium_memcmp(x.data(), y.data(), x.size()) == 0; });
  });
}

bool equal(const Secret& a, std::span<const std::byte> bytes) {
  const detail::scrub_on_exit scrub;
  return a.with_bytes([&](std::span<const std::byte> x) {
    return x.size() == bytes.size() && sodium_memcmp(x.data(), bytes.data(), x.size()) == 0;
  });
}

// --- SecretFactory --------------------------------------------------------

SecretFactory::SecretFactory(std::shared_ptr<securememory::backend> b) {
  if (!b) throw error(errc::invalid_argument, "SecretFactory needs a backend, got a null pointer");
  try {
    core_ = new detail::factory_core(std::move(b));
  } catch (const std::bad_alloc&) {
    throw Error(Errc::out_of_memory, "out of memory for a SecretFactory; free memory");
  }
}

SecretFactory::SecretFactory(const SecretFactory& other) noexcept : core_(other.core_) { core_->retain(); }

SecretFactory& SecretFactory::operator=(const SecretFactory& other) noexcept {
  if (this == &other) return *this;
  other.core_->retain();
  core_->drop();
  core_ = other.core_;
  return *this;
}

SecretFactory::~SecretFactory() { core_->drop(); }

std::string_view SecretFactory::backend() const noexcept { return core_->get().name(); }

Guarantees SecretFactory::guarantees() const noexcept { return core_->get().describe().provides; }

std::string_view SecretFactory::key_backend() const noexcept { return core_->get().describe().key_backend; }

backend& detail::backend_of(const SecretFactory& f) noexcept { return f.core_->get(); }

Secret SecretFactory::create(std::span<std::byte> source) const {
  const detail::scrub_on_exit scrub;  // the copy's registers and stack (scrub.hpp)
  detail::ensure_initialised();
  detail::state_ref state(detail::secret_state::make(core_));
  state->populate(
      source.size(),
      [](std::byte* dst, std::size_t size, void* context) {
        std::memcpy(dst, static_cast<const std::byte*>(context), size);
      },
      source.data());
  sodium_memzero(source.data(), source.size());
  return Secret(std::move(state));
}

Secret SecretFactory::create(std::span<std::byte> source, std::error_code& ec) const noexcept {
  return detail::reporting(ec, [&] { return create(source); });
}

Secret SecretFactory::create_random(std::size_t size, std::error_code& ec) const noexcept {
  return detail::reporting(ec, [&] { return create_random(size); });
}

Secret SecretFactory::create_from_fd(int fd, std::size_t size, std::error_code& ec) const noexcept {
  return detail::reporting(ec, [&] { return create_from_fd(fd, size); });
}

Secret SecretFactory::create_with_callback(std::size_t size, fill_callback fill, void* context,
                                           std::error_code& ec) const {
  ec.clear();
  try {
    return create_with_callback(size, fill, context);
  } catch (const Error& e) {  // the library's errors, also from a secret used inside fill; fill's own propagate
    detail::set_error_code(ec, e);
  } catch (const std::bad_alloc& e) {
    detail::set_error_code(ec, e);
  }
  return {};
}

Secret SecretFactory::create_random(std::size_t size) const {
  const detail::scrub_on_exit scrub;  // the generator's registers and stack (scrub.hpp)
  detail::ensure_initialised();
  detail::state_ref state(detail::secret_state::make(core_));
  state->populate(
      size, [](std::byte* dst, std::size_t n, void*) { detail::csprng::fill(dst, n); }, nullptr);
  return Secret(std::move(state));
}

Secret SecretFactory::create_with_callback(std::size_t size, fill_callback fill, void* context) const {
  const detail::scrub_on_exit scrub;  // what fill left in registers and on the stack (scrub.hpp)
  detail::ensure_initialised();
  struct user_fill {
    fill_callback fill;
    void* context;
  } call{fill, context};
  detail::state_ref state(detail::secret_state::make(core_));
  state->populate(
      size,
      [](std::byte* dst, std::size_t n, void* c) {
        const auto* u = static_cast<const user_fill*>(c);
        u->fill(std::span<std::byte>(dst, n), u->context);
      },
      &call);
  return Secret(std::move(state));
}

Secret SecretFactory::create_from_fd(int fd, std::size_t size) const {
  return create_with(size, [fd](std::span<std::byte> out) {
    std::size_t done = 0;
    while (done < out.size()) {
      const long n = detail::os::read_fd(fd, out.data() + done, out.size() - done);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n == 0) {
        throw error(errc::read_failed,
                    fmt::format("create_from_fd: the input ended after {} of the {} bytes asked for; nothing was kept",
                                done, out.size()));
      } else if (errno != EINTR) {
        detail::throw_os_error(errc::read_failed,
                               fmt::format("create_from_fd: reading byte {} of {} failed", done, out.size()).c_str(),
                               "read", errno, "nothing was kept");
      }
    }
  });
}

}  // namespace securememory
