// securememory: Secret (a handle to protected bytes), Reader, SecretFactory.
#pragma once

#include <securememory/backend.hpp>
#include <securememory/config.hpp>

#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

namespace securememory {

/// The largest secret, in bytes: 4 GiB minus 1 MiB. The state of a secret
/// stores its sizes in 32 bits (64 bytes per secret in all, see
/// docs/design.md); the 1 MiB leaves room for a backend's page rounding and
/// guard pages. Larger sizes throw error(invalid_size).
inline constexpr std::size_t max_secret_size = (std::size_t{1} << 32) - (std::size_t{1} << 20);

class Secret;
class SecretFactory;

namespace detail {
class secret_state;
class factory_core;

/// Reference counting of a secret's state (lib/secret.cpp).
SECUREMEMORY_API void retain(secret_state* s) noexcept;
/// Drops one reference; the last one closes the secret (if still open) and
/// frees the state. Never throws.
SECUREMEMORY_API void drop(secret_state* s) noexcept;

/// An owning pointer to a secret's state: 8 bytes (a std::shared_ptr is 16
/// plus a control block per secret).
class state_ref {
 public:
  state_ref() noexcept = default;
  /// Adopts one reference already counted for s.
  explicit state_ref(secret_state* s) noexcept : state_(s) {}
  state_ref(const state_ref& other) noexcept : state_(other.state_) {
    if (state_ != nullptr) retain(state_);
  }
  state_ref(state_ref&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}
  state_ref& operator=(state_ref other) noexcept {
    std::swap(state_, other.state_);
    return *this;
  }
  ~state_ref() {
    if (state_ != nullptr) drop(state_);
  }
  [[nodiscard]] secret_state* get() const noexcept { return state_; }
  secret_state* operator->() const noexcept { return state_; }
  explicit operator bool() const noexcept { return state_ != nullptr; }

 private:
  secret_state* state_ = nullptr;
};

/// Callables that can be null: function pointers and std::function.
template <class T>
struct is_std_function : std::false_type {};
template <class R, class... A>
struct is_std_function<std::function<R(A...)>> : std::true_type {};
template <class T>
inline constexpr bool nullable_callable_v = std::is_pointer_v<T> || is_std_function<T>::value;

/// The region a secret holds (internal, for tests; not exported).
region region_of(const Secret& s) noexcept;
/// The backend object of a factory (internal, for tests; not exported).
backend& backend_of(const SecretFactory& f) noexcept;

/// Throws error(invalid_argument) for a null with_bytes callback.
[[noreturn]] SECUREMEMORY_API void throw_null_callback();

/// Keeps one secret readable for the lifetime of the object (one "reader" of
/// the access state machine). Used by Secret::with_bytes; not for direct use.
class SECUREMEMORY_API access_scope {
 public:
  explicit access_scope(state_ref state);  // throws error(closed / protection_failed)
  access_scope(const access_scope&) = delete;
  access_scope& operator=(const access_scope&) = delete;
  ~access_scope();  // re-protects if finish() was not reached; never throws

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept;
  /// Ends the access; throws error(protection_failed) if re-protecting fails.
  void finish();

 private:
  friend class secret_state;
  state_ref state_;  // keeps the state alive for the call
  access_scope* outer_;  // this thread's enclosing access, for reentrancy checks
  bool done_ = false;
};
}  // namespace detail

class Reader;

/// A secret held in protected memory. Move-only handle.
///
/// Thread-safety: with_bytes(), size(), is_closed(), reader(), backend() and
/// close() may be called on the same Secret from many threads at once.
/// Moving or destroying a Secret while another thread uses it is a data race.
///
///     auto factory = securememory::make_factory("protectedmemory");
///     auto secret = factory.create_random(32);
///     secret.with_bytes([](std::span<const std::byte> key) { use(key); });
class SECUREMEMORY_API Secret {
 public:
  Secret() noexcept = default;  ///< A closed, empty handle.
  Secret(Secret&&) noexcept = default;
  Secret& operator=(Secret&& other) noexcept;  ///< Closes *this first.
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  /// Closes the secret. Never throws: a failure is logged and counted.
  ~Secret();

  /// Calls fn(std::span<const std::byte>) with the memory readable (read-only)
  /// for this call only, and returns fn's result. Concurrent callers share
  /// one opening; fn runs with no library lock held. An exception from fn
  /// propagates after the memory is no-access again.
  /// Throws error(closed) after close, error(protection_failed) if the pages
  /// cannot be opened or re-protected, error(invalid_argument) for a null
  /// function pointer or empty std::function (before anything is opened).
  template <class F>
  std::invoke_result_t<F&, std::span<const std::byte>> with_bytes(F&& fn) const {
    using result = std::invoke_result_t<F&, std::span<const std::byte>>;
    if constexpr (detail::nullable_callable_v<std::remove_cvref_t<F>>) {
      if (fn == nullptr) detail::throw_null_callback();
    }
    detail::access_scope scope(state_);
    if constexpr (std::is_void_v<result>) {
      std::invoke(fn, scope.bytes());
      scope.finish();
    } else {
      result r = std::invoke(fn, scope.bytes());
      scope.finish();
      return std::forward<result>(r);
    }
  }

  /// Size in bytes, also after close(); 0 for a moved-from or
  /// default-constructed handle.
  [[nodiscard]] std::size_t size() const noexcept;
  /// True after close(), and for moved-from or default-constructed handles.
  [[nodiscard]] bool is_closed() const noexcept;
  /// Name of the backend holding the bytes ("" for an empty handle).
  [[nodiscard]] std::string_view backend() const noexcept;

  /// Refuses new readers, waits for in-flight ones, wipes, unlocks and
  /// unmaps. A second call is a no-op. Throws error(reentrant_close) when
  /// called from inside this secret's own with_bytes callback (the secret
  /// stays open); error(protection_failed / release_failed) when a step of
  /// the release failed (the secret is closed all the same).
  void close();

  /// A sequential reader of the bytes (copies out in chunks).
  [[nodiscard]] Reader reader() const;

  /// Runs the backend's integrity check now (a no-op for backends without
  /// one). On a violation: the violation handler, then the policy (abort, or
  /// quarantine and throw error(canary_violation)). Throws error(closed)
  /// after close.
  void verify() const;

 private:
  friend class SecretFactory;
  friend region detail::region_of(const Secret& s) noexcept;
  explicit Secret(detail::state_ref s) noexcept;
  detail::state_ref state_;
};

/// Copies a secret's bytes out sequentially, like a stream.
/// One Reader is not safe to use from several threads at once.
class SECUREMEMORY_API Reader {
 public:
  /// Copies up to out.size() next bytes into out; returns how many, 0 at the
  /// end (and for an empty out). Throws error(closed) once the secret is
  /// closed. The bytes copied are the caller's to protect and wipe.
  std::size_t read(std::span<std::byte> out);

 private:
  friend class Secret;
  explicit Reader(detail::state_ref s) noexcept;
  detail::state_ref state_;
  std::size_t offset_ = 0;
};

/// Creates secrets in one backend. Cheap to copy; copies share the backend.
/// Thread-safe. The backend lives as long as any copy of the factory or any
/// secret made with it. Moving a factory copies it (it is never empty).
class SECUREMEMORY_API SecretFactory {
 public:
  /// Throws error(invalid_argument) for a null backend.
  explicit SecretFactory(std::shared_ptr<securememory::backend> b);
  SecretFactory(const SecretFactory& other) noexcept;
  SecretFactory& operator=(const SecretFactory& other) noexcept;
  ~SecretFactory();

  /// Copies source into protected memory, then wipes source (all zeros).
  /// When creation fails, source is left untouched and nothing is held.
  /// Throws error(invalid_size) for 0 bytes or more than max_secret_size,
  /// error(out_of_memory / memlock_limit / protection_failed).
  [[nodiscard]] Secret create(std::span<std::byte> source) const;

  /// A secret of `size` bytes from libsodium's CSPRNG, written directly into
  /// protected memory. Throws like create().
  [[nodiscard]] Secret create_random(std::size_t size) const;

  /// A secret of `size` bytes written directly into protected memory by
  /// `fill(std::span<std::byte>)`: the memory is writable for that call
  /// only, and no-access (or sealed) once it returns, so the bytes never
  /// exist in memory of the caller's. Use it to decrypt a wrapped key into a
  /// secret, to derive a key from another secret (a with_bytes inside fill),
  /// or to read key material from a file or socket. The span's bytes are
  /// unspecified when fill starts: fill must write all of them. If fill
  /// throws, the memory is wiped and released, nothing is held, and the
  /// exception propagates. Throws like create_random(); fill is not called
  /// when the size is invalid or the memory cannot be had.
  ///
  ///     auto drk = factory.create_with(32, [&](std::span<std::byte> out) {
  ///       ik.with_bytes([&](std::span<const std::byte> key) { unwrap(key, wrapped, out); });
  ///     });
  template <class F>
    requires std::invocable<F&, std::span<std::byte>>
  [[nodiscard]] Secret create_with(std::size_t size, F&& fill) const {
    using callable = std::remove_reference_t<F>;
    return create_with_callback(
        size,
        [](std::span<std::byte> bytes, void* context) { std::invoke(*static_cast<callable*>(context), bytes); },
        const_cast<void*>(static_cast<const void*>(std::addressof(fill))));  // NOLINT(*-const-cast): restored above
  }

  /// A secret of exactly `size` bytes read from the file descriptor `fd`
  /// (a file, pipe or socket; blocking), straight into protected memory
  /// with create_with(). Short reads and EINTR are retried. Throws
  /// error(read_failed) when read() fails (sys_errno() is its errno) or the
  /// input ends before `size` bytes; then nothing is held and the bytes
  /// read so far are wiped. Reads no further than `size` bytes.
  [[nodiscard]] Secret create_from_fd(int fd, std::size_t size) const;

  /// Name of the backend.
  [[nodiscard]] std::string_view backend() const noexcept;

  /// What this factory's backend guarantees on this host now: its own
  /// description, with what it found here (sealed: whether its key is
  /// outside the kernel's direct map). See guarantees.hpp. May probe the
  /// host the first time (sealed's key backend); never throws.
  [[nodiscard]] Guarantees guarantees() const noexcept;

  /// The backend holding this backend's key ("secretmem" or "memguard" for
  /// sealed, where memfd_secret works or not), "" for backends without a
  /// key. Never throws.
  [[nodiscard]] std::string_view key_backend() const noexcept;

 private:
  friend securememory::backend& detail::backend_of(const SecretFactory& f) noexcept;
  using fill_callback = void (*)(std::span<std::byte> bytes, void* context);
  [[nodiscard]] Secret create_with_callback(std::size_t size, fill_callback fill, void* context) const;

  detail::factory_core* core_ = nullptr;  // counted: by each factory copy and each secret
};

}  // namespace securememory
