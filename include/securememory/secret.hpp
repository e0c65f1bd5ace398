// securememory: Secret (a handle to protected bytes), Reader, SecretFactory.
//
// Every call comes in two forms: the one that throws securememory::Error,
// and an overload taking a std::error_code& that sets it instead and never
// throws an Error (for code built with -fno-exceptions; see error.hpp).
// Exception safety: a call that fails leaves the program as it was (nothing
// held, sources untouched), except where its comment says otherwise (close()
// always ends with the secret closed).
#pragma once

#include <securememory/backend.hpp>
#include <securememory/config.hpp>
#include <securememory/error.hpp>

#include <array>
#include <concepts>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

namespace securememory {

/// The largest secret, in bytes: 4 GiB minus 1 MiB. The state of a secret
/// stores its sizes in 32 bits (64 bytes per secret in all, see
/// docs/design.md); the 1 MiB leaves room for a backend's page rounding and
/// guard pages. Larger sizes are Errc::invalid_size.
inline constexpr std::size_t max_secret_size = (std::size_t{1} << 32) - (std::size_t{1} << 20);

class Secret;
class SecretFactory;
class Reader;

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

/// Callables that can be null: function pointers, and classes that say
/// whether they hold a function (std::function: operator bool).
template <class T>
concept nullable_callable = std::is_pointer_v<T> || requires(const T& f) {
  { f.operator bool() } -> std::same_as<bool>;
  { f == nullptr } -> std::convertible_to<bool>;
};

/// True for a result type through which a with_bytes callback could hand
/// the secret's bytes out of the call: references, pointers, iterators,
/// spans, string_views and other borrowed ranges and views, reference
/// wrappers, and optionals, pairs, tuples and arrays of them. (A type of
/// your own that keeps a pointer inside is not caught: do not return one.)
template <class T>
struct escapes
    : std::bool_constant<std::is_reference_v<T> || std::is_pointer_v<T> ||
                         std::input_or_output_iterator<std::remove_cv_t<T>> ||
                         std::ranges::enable_borrowed_range<std::remove_cv_t<T>> ||
                         std::ranges::enable_view<std::remove_cv_t<T>> ||
                         !std::is_same_v<std::unwrap_reference_t<std::remove_cv_t<T>>, std::remove_cv_t<T>>> {};
template <class T>
struct escapes<std::optional<T>> : escapes<T> {};
template <class A, class B>
struct escapes<std::pair<A, B>> : std::bool_constant<escapes<A>::value || escapes<B>::value> {};
template <class... T>
struct escapes<std::tuple<T...>> : std::bool_constant<(escapes<T>::value || ...)> {};
template <class T, std::size_t N>
struct escapes<std::array<T, N>> : escapes<T> {};
template <>
struct escapes<void> : std::false_type {};

/// The with_bytes callbacks: invocable with the read-only bytes.
template <class F>
concept reader_callback = std::invocable<F&, std::span<const std::byte>>;

/// A contiguous range of byte-sized, trivially copyable, writable elements
/// (std::vector<std::byte>, std::string, std::array<unsigned char, N>,
/// std::span<std::byte>, ...): what create() copies and wipes.
template <class R>
concept writable_byte_range = requires(R& r) {
  { std::data(r) };
  { std::size(r) } -> std::convertible_to<std::size_t>;
} && std::is_pointer_v<decltype(std::data(std::declval<R&>()))> &&
    requires {
      requires sizeof(*std::data(std::declval<R&>())) == 1;
      requires std::is_trivially_copyable_v<std::remove_pointer_t<decltype(std::data(std::declval<R&>()))>>;
      requires !std::is_const_v<std::remove_pointer_t<decltype(std::data(std::declval<R&>()))>>;
    };

/// The region a secret holds (internal, for tests; not exported).
Region region_of(const Secret& s) noexcept;
/// The backend object of a factory (internal, for tests; not exported).
Backend& backend_of(const SecretFactory& f) noexcept;

/// Throws Error(invalid_argument) for a null with_bytes callback.
[[noreturn]] SECUREMEMORY_API void throw_null_callback();
/// Sets ec for a null with_bytes callback.
SECUREMEMORY_API void null_callback(std::error_code& ec) noexcept;

/// Keeps one secret readable for the lifetime of the object (one "reader" of
/// the access state machine). Used by Secret::with_bytes; not for direct use.
class SECUREMEMORY_API access_scope {
 public:
  explicit access_scope(state_ref state);  // throws Error(closed / protection_failed / integrity_violation)
  /// Sets ec instead of throwing; the scope is then inactive (bytes() empty).
  access_scope(state_ref state, std::error_code& ec) noexcept;
  access_scope(const access_scope&) = delete;
  access_scope& operator=(const access_scope&) = delete;
  ~access_scope();  // re-protects if finish() was not reached; never throws

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept;
  /// Ends the access; throws Error(protection_failed) if re-protecting fails.
  void finish();
  /// Ends the access; sets ec if re-protecting fails.
  void finish(std::error_code& ec) noexcept;

 private:
  friend class secret_state;
  void enter();
  state_ref state_;  // keeps the state alive for the call
  access_scope* outer_ = nullptr;  // this thread's enclosing access, for reentrancy checks
  bool done_ = false;
};
}  // namespace detail

/// A secret held in protected memory. Move-only handle, 8 bytes.
///
/// Thread-safety: every const member function (with_bytes, size,
/// is_closed, backend, reader, verify) and close() may be called on the
/// same Secret from many threads at once. Moving, assigning or destroying a
/// Secret while another thread uses it is a data race, as for any object.
///
///     auto factory = securememory::make_factory("protectedmemory");
///     auto secret = factory.create_random(32);
///     secret.with_bytes([](std::span<const std::byte> key) { use(key); });
class SECUREMEMORY_API Secret {
 public:
  Secret() noexcept = default;  ///< A closed, empty handle.
  Secret(Secret&&) noexcept = default;
  /// Closes *this first (as the destructor does: never throws), then takes
  /// other's secret; other is left empty.
  Secret& operator=(Secret&& other) noexcept;
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  /// Closes the secret. Never throws: a failure is logged and counted.
  ~Secret();

  /// Calls fn(std::span<const std::byte>) with the memory readable (read-only)
  /// for this call only, and returns fn's result. Concurrent callers share
  /// one opening; fn runs with no library lock held. An exception from fn
  /// propagates after the memory is no-access again.
  ///
  /// fn must not return anything through which the bytes could leave the
  /// call (a reference, pointer, iterator, span, string_view or other view,
  /// or an optional/pair/tuple/array of those): that does not compile.
  /// Copy what you need into a value (or a WipingBuffer) instead.
  ///
  /// Throws Error(closed) after close() (and for a secret inherited through
  /// fork()), Error(protection_failed) if the pages cannot be opened or
  /// re-protected, Error(memlock_limit) (sealed: no plaintext scratch can be
  /// locked), Error(integrity_violation) (policy quarantine: the opening
  /// found the secret corrupted), Error(invalid_argument) for a null
  /// function pointer or empty std::function (before anything is opened).
  template <class F>
    requires detail::reader_callback<F>
  decltype(auto) with_bytes(F&& fn) const {
    using result = std::invoke_result_t<F&, std::span<const std::byte>>;
    static_assert(!detail::escapes<result>::value,
                  "securememory: a with_bytes callback must not return a reference, pointer, iterator, span, "
                  "string_view or other view of the bytes: they would outlive the access. Return a copy.");
    if constexpr (detail::nullable_callable<std::remove_cvref_t<F>>) {
      if (fn == nullptr) detail::throw_null_callback();
    }
    detail::access_scope scope(state_);
    if constexpr (std::is_void_v<result>) {
      fn(scope.bytes());
      scope.finish();
    } else {
      result r = fn(scope.bytes());
      scope.finish();
      return r;
    }
  }

  /// with_bytes() reporting the library's errors through ec instead of
  /// throwing them: on an error fn is not called (or its result dropped, if
  /// re-protecting failed after it) and the result is empty. Returns
  /// std::optional of fn's result (nothing for a void fn). noexcept when fn
  /// is.
  template <class F>
    requires detail::reader_callback<F>
  auto with_bytes(F&& fn, std::error_code& ec) const
      noexcept(std::is_nothrow_invocable_v<F&, std::span<const std::byte>>) {
    using result = std::invoke_result_t<F&, std::span<const std::byte>>;
    static_assert(!detail::escapes<result>::value,
                  "securememory: a with_bytes callback must not return a reference, pointer, iterator, span, "
                  "string_view or other view of the bytes: they would outlive the access. Return a copy.");
    ec.clear();
    if constexpr (std::is_void_v<result>) {
      if constexpr (detail::nullable_callable<std::remove_cvref_t<F>>) {
        if (fn == nullptr) return detail::null_callback(ec);
      }
      detail::access_scope scope(state_, ec);
      if (ec) return;
      fn(scope.bytes());
      scope.finish(ec);
    } else {
      if constexpr (detail::nullable_callable<std::remove_cvref_t<F>>) {
        if (fn == nullptr) {
          detail::null_callback(ec);
          return std::optional<result>{};
        }
      }
      detail::access_scope scope(state_, ec);
      if (ec) return std::optional<result>{};
      std::optional<result> r(fn(scope.bytes()));
      scope.finish(ec);
      if (ec) r.reset();
      return r;
    }
  }

  /// Size in bytes, also after close(); 0 for a moved-from or
  /// default-constructed handle. Thread-safe.
  [[nodiscard]] std::size_t size() const noexcept;
  /// True after close(), for moved-from or default-constructed handles,
  /// and in a forked child for a secret of the parent. Thread-safe.
  [[nodiscard]] bool is_closed() const noexcept;
  /// Name of the backend holding the bytes ("" for an empty handle).
  /// Thread-safe.
  [[nodiscard]] std::string_view backend() const noexcept;

  /// Refuses new readers, waits for in-flight ones, wipes, unlocks and
  /// unmaps. A second call is a no-op; in a forked child, for a parent's
  /// secret, it only drops the mapping. Throws Error(reentrant_close) when
  /// called from inside this secret's own with_bytes callback (the secret
  /// stays open); Error(integrity_violation) when the closing check finds
  /// it corrupted (policy quarantine); Error(protection_failed /
  /// release_failed) when a step of the release failed (the secret is
  /// closed all the same). Thread-safe.
  void close();
  /// close() reporting through ec; never throws.
  void close(std::error_code& ec) noexcept;

  /// A sequential reader of the bytes (copies out in chunks). Throws
  /// Error(closed) for a closed, empty or inherited secret. Thread-safe.
  [[nodiscard]] Reader reader() const;
  /// reader() reporting through ec (nothing on an error); never throws.
  [[nodiscard]] std::optional<Reader> reader(std::error_code& ec) const noexcept;

  /// Runs the backend's integrity check now (a no-op for backends without
  /// one). On a violation: the violation handler, then the policy (abort, or
  /// quarantine and throw Error(integrity_violation)). Throws Error(closed)
  /// after close. Thread-safe.
  void verify() const;
  /// verify() reporting through ec; never throws an Error.
  void verify(std::error_code& ec) const noexcept;

 private:
  friend class SecretFactory;
  friend Region detail::region_of(const Secret& s) noexcept;
  explicit Secret(detail::state_ref s) noexcept;
  detail::state_ref state_;
};

/// Copies a secret's bytes out sequentially, like a stream. One Reader is
/// not safe to use from several threads at once (several Readers of one
/// Secret are).
class SECUREMEMORY_API Reader {
 public:
  /// Copies up to out.size() next bytes into out; returns how many, 0 at the
  /// end (and for an empty out). Throws Error(closed) once the secret is
  /// closed, and what with_bytes() throws. The bytes copied are the caller's
  /// to protect and wipe (a WipingBuffer does it).
  [[nodiscard]] std::size_t read(std::span<std::byte> out);
  /// read() reporting through ec (0 on an error); never throws.
  [[nodiscard]] std::size_t read(std::span<std::byte> out, std::error_code& ec) noexcept;

 private:
  friend class Secret;
  explicit Reader(detail::state_ref s) noexcept;
  detail::state_ref state_;
  std::size_t offset_ = 0;
};

/// Compares two secrets' bytes in constant time (libsodium's sodium_memcmp:
/// the time does not depend on where they differ). Secrets of different
/// sizes are unequal (the sizes are not secret). Throws what with_bytes()
/// throws (Error(closed), ...).
[[nodiscard]] SECUREMEMORY_API bool equal(const Secret& a, const Secret& b);
/// Compares a secret's bytes with `bytes` in constant time.
[[nodiscard]] SECUREMEMORY_API bool equal(const Secret& a, std::span<const std::byte> bytes);

/// Creates secrets in one backend. Cheap to copy; copies share the backend.
/// The backend lives as long as any copy of the factory or any secret made
/// with it. Moving a factory copies it (it is never empty).
///
/// Thread-safety: every const member function may be called on the same
/// factory from many threads at once; assigning to a factory while another
/// thread uses that same factory object is a data race (as for
/// std::shared_ptr). Different factory objects are independent.
class SECUREMEMORY_API SecretFactory {
 public:
  /// A factory for a backend object of your own (the registry makes them
  /// for registered names). Throws Error(invalid_argument) for a null
  /// backend, Error(out_of_memory).
  explicit SecretFactory(std::shared_ptr<Backend> b);
  SecretFactory(const SecretFactory& other) noexcept;
  SecretFactory& operator=(const SecretFactory& other) noexcept;
  ~SecretFactory();

  /// Copies `source` into protected memory, then wipes `source` (all
  /// zeros). `source` is any contiguous range of byte-sized, trivially
  /// copyable, non-const elements that outlives the call (a named
  /// std::vector<std::byte>, std::string, std::array<unsigned char, N>, a
  /// std::span<std::byte>; not a temporary, not const: it is wiped). When
  /// creation fails, `source` is left untouched and nothing is held.
  /// Throws Error(invalid_size) for 0 bytes or more than max_secret_size,
  /// Error(out_of_memory / memlock_limit / protection_failed).
  [[nodiscard]] Secret create(std::span<std::byte> source) const;
  template <class R>
    requires detail::writable_byte_range<R>
  [[nodiscard]] Secret create(R&& source) const {
    static_assert(std::is_lvalue_reference_v<R> || std::ranges::enable_borrowed_range<std::remove_cvref_t<R>>,
                  "securememory: create() wipes its source: pass a named buffer, not a temporary");
    return create(as_bytes_of(source));
  }
  /// create() reporting through ec (an empty Secret on an error); never
  /// throws.
  [[nodiscard]] Secret create(std::span<std::byte> source, std::error_code& ec) const noexcept;
  template <class R>
    requires detail::writable_byte_range<R>
  [[nodiscard]] Secret create(R&& source, std::error_code& ec) const noexcept {
    static_assert(std::is_lvalue_reference_v<R> || std::ranges::enable_borrowed_range<std::remove_cvref_t<R>>,
                  "securememory: create() wipes its source: pass a named buffer, not a temporary");
    return create(as_bytes_of(source), ec);
  }

  /// A secret of `size` random bytes (the library's CSPRNG), written
  /// directly into protected memory. Throws like create().
  [[nodiscard]] Secret create_random(std::size_t size) const;
  /// create_random() reporting through ec; never throws.
  [[nodiscard]] Secret create_random(std::size_t size, std::error_code& ec) const noexcept;

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
    return create_with_callback(size, &call_fill<std::remove_reference_t<F>>, context_of(fill));
  }
  /// create_with() reporting the library's errors through ec (an empty
  /// Secret on an error); an exception from fill still propagates. noexcept
  /// when fill is.
  template <class F>
    requires std::invocable<F&, std::span<std::byte>>
  [[nodiscard]] Secret create_with(std::size_t size, F&& fill, std::error_code& ec) const
      noexcept(std::is_nothrow_invocable_v<F&, std::span<std::byte>>) {
    return create_with_callback(size, &call_fill<std::remove_reference_t<F>>, context_of(fill), ec);
  }

  /// A secret of exactly `size` bytes read from the file descriptor `fd`
  /// (a file, pipe or socket; blocking), straight into protected memory
  /// with create_with(). Short reads and EINTR are retried. Throws
  /// Error(read_failed) when read() fails (sys_errno() is its errno) or the
  /// input ends before `size` bytes; then nothing is held and the bytes
  /// read so far are wiped. Reads no further than `size` bytes.
  [[nodiscard]] Secret create_from_fd(int fd, std::size_t size) const;
  /// create_from_fd() reporting through ec; never throws.
  [[nodiscard]] Secret create_from_fd(int fd, std::size_t size, std::error_code& ec) const noexcept;

  /// Name of the backend. Thread-safe.
  [[nodiscard]] std::string_view backend() const noexcept;

  /// What this factory's backend guarantees on this host now: its own
  /// description, with what it found here (sealed: whether its key is
  /// outside the kernel's direct map). See guarantees.hpp. May probe the
  /// host the first time (sealed's key backend). Thread-safe; never throws.
  [[nodiscard]] Guarantees guarantees() const noexcept;

  /// The backend holding this backend's key ("secretmem" or "memguard" for
  /// sealed, where memfd_secret works or not), "" for backends without a
  /// key. Thread-safe; never throws.
  [[nodiscard]] std::string_view key_backend() const noexcept;

 private:
  friend Backend& detail::backend_of(const SecretFactory& f) noexcept;
  using fill_callback = void (*)(std::span<std::byte> bytes, void* context);

  template <class F>
  static void call_fill(std::span<std::byte> bytes, void* context) {
    (*static_cast<F*>(context))(bytes);
  }
  template <class F>
  static void* context_of(F& fill) noexcept {
    return const_cast<void*>(static_cast<const void*>(std::addressof(fill)));  // NOLINT(*-const-cast): cast back in call_fill
  }
  template <class R>
  static std::span<std::byte> as_bytes_of(R& source) noexcept {
    return {reinterpret_cast<std::byte*>(std::data(source)), static_cast<std::size_t>(std::size(source))};  // NOLINT(*-reinterpret-cast): byte-sized elements
  }

  [[nodiscard]] Secret create_with_callback(std::size_t size, fill_callback fill, void* context) const;
  [[nodiscard]] Secret create_with_callback(std::size_t size, fill_callback fill, void* context,
                                            std::error_code& ec) const;

  detail::factory_core* core_ = nullptr;  // counted: by each factory copy and each secret
};

}  // namespace securememory
