// securememory: choosing a backend by name at run time.
//
// Rules (spdlog's registry, made an object): names are unique, a duplicate
// registration throws, an unknown name is reported with the known ones
// (quoted, escaped and cut short in messages: a name may come from the
// environment). The process-wide default registry is created on first use
// and never destroyed, so secrets held in static objects can still be
// closed at exit.
#pragma once

#include <securememory/backend.hpp>
#include <securememory/config.hpp>
#include <securememory/secret.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace securememory {

namespace detail {
struct registry_impl;
}  // namespace detail

/// Makes (or returns a shared instance of) a backend. It throws
/// error(backend_unavailable) when the backend cannot run on this host.
using BackendMaker = std::function<std::shared_ptr<Backend>()>;

/// A name -> backend maker table. Thread-safe, and fork-safe: its lock is
/// held across fork() (a forked child never inherits it locked). Most
/// programs use the default instance through the free functions below;
/// tests can build their own.
class SECUREMEMORY_API Registry {
 public:
  /// An empty registry (no built-in backends).
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  /// Adds a backend. Throws error(duplicate_backend) if the name is taken,
  /// error(invalid_argument) for an empty name or a null maker.
  void add(std::string name, BackendMaker maker);
  /// Registered names, sorted.
  [[nodiscard]] std::vector<std::string> names() const;
  /// True when the name is registered and its maker succeeds on this host
  /// (returns a backend; a securememory::error from the maker means false).
  /// Any other exception from the maker is the maker's bug and propagates.
  [[nodiscard]] bool available(std::string_view name) const;
  /// A factory for the named backend. Throws error(unknown_backend), whose
  /// message lists the registered names, what the maker throws
  /// (error(backend_unavailable)), or error(invalid_argument) when the maker
  /// returned null.
  [[nodiscard]] SecretFactory make_factory(std::string_view name) const;
  /// make_factory(name), refused with error(backend_unavailable) when the
  /// backend does not provide every guarantee set in `required` on this
  /// host; the message names each one missing and the registered backends
  /// that provide it here.
  [[nodiscard]] SecretFactory make_factory(std::string_view name, const Guarantees& required) const;
  /// make_factory(name) and make_factory(name, required) reporting through
  /// ec (nothing on an error); never throw an Error.
  [[nodiscard]] std::optional<SecretFactory> make_factory(std::string_view name, std::error_code& ec) const noexcept;
  [[nodiscard]] std::optional<SecretFactory> make_factory(std::string_view name, const Guarantees& required,
                                                          std::error_code& ec) const noexcept;

 private:
  detail::registry_impl* impl_;
};

/// The process-wide registry, holding the built-in backends.
[[nodiscard]] SECUREMEMORY_API Registry& default_registry();

/// default_registry().make_factory(name).
[[nodiscard]] SECUREMEMORY_API SecretFactory make_factory(std::string_view backend);
/// default_registry().make_factory(name, required).
[[nodiscard]] SECUREMEMORY_API SecretFactory make_factory(std::string_view backend, const Guarantees& required);
/// default_registry().make_factory(name, ec) and (name, required, ec):
/// nothing and ec set on an error; never throw an Error.
[[nodiscard]] SECUREMEMORY_API std::optional<SecretFactory> make_factory(std::string_view backend,
                                                                         std::error_code& ec) noexcept;
[[nodiscard]] SECUREMEMORY_API std::optional<SecretFactory> make_factory(std::string_view backend,
                                                                         const Guarantees& required,
                                                                         std::error_code& ec) noexcept;
/// make_factory(env SECUREMEMORY_BACKEND if set and not empty, else
/// "protectedmemory", env SECUREMEMORY_REQUIRE): SECUREMEMORY_REQUIRE is a
/// comma-separated list of Guarantees field names
/// ("outside_direct_map,guard_pages"); an unknown name is
/// error(invalid_argument).
[[nodiscard]] SECUREMEMORY_API SecretFactory make_factory();
/// make_factory() reporting through ec; never throws an Error.
[[nodiscard]] SECUREMEMORY_API std::optional<SecretFactory> make_factory(std::error_code& ec) noexcept;
/// default_registry().names().
[[nodiscard]] SECUREMEMORY_API std::vector<std::string> backend_names();
/// default_registry().available(name).
[[nodiscard]] SECUREMEMORY_API bool backend_available(std::string_view name);
/// default_registry().add(name, maker).
SECUREMEMORY_API void register_backend(std::string name, BackendMaker maker);

/// The name of earlier versions, kept so that code written against it still
/// compiles (docs/design.md, "Names").
using registry = Registry;

}  // namespace securememory
