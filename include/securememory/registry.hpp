// securememory: choosing a backend by name at run time.
//
// Rules (spdlog's registry, made an object): names are unique, a duplicate
// registration throws, an unknown name is reported with the known ones. The
// process-wide default registry is created on first use and never destroyed,
// so secrets held in static objects can still be closed at exit.
#pragma once

#include <securememory/backend.hpp>
#include <securememory/config.hpp>
#include <securememory/secret.hpp>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace securememory {

class registry;
namespace detail {
/// Internal (not exported): the backend a registry's maker for `name`
/// returns. Throws like make_factory(name). Used by "sealed" to put its key
/// in the strongest registered backend.
std::shared_ptr<backend> make_registered_backend(const registry& r, std::string_view name);
}  // namespace detail

/// Makes (or returns a shared instance of) a backend. It throws
/// error(backend_unavailable) when the backend cannot run on this host.
using BackendMaker = std::function<std::shared_ptr<backend>()>;

/// A name -> backend maker table. Thread-safe. Most programs use the default
/// instance through the free functions below; tests can build their own.
class SECUREMEMORY_API registry {
 public:
  /// An empty registry (no built-in backends).
  registry() = default;

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

 private:
  [[nodiscard]] BackendMaker find(std::string_view name) const;
  friend std::shared_ptr<backend> detail::make_registered_backend(const registry& r, std::string_view name);
  mutable std::mutex mutex_;
  std::map<std::string, BackendMaker, std::less<>> makers_;
};

/// The process-wide registry, holding the built-in backends.
SECUREMEMORY_API registry& default_registry();

/// default_registry().make_factory(name).
SECUREMEMORY_API SecretFactory make_factory(std::string_view backend);
/// make_factory(env SECUREMEMORY_BACKEND if set and not empty, else "protectedmemory").
SECUREMEMORY_API SecretFactory make_factory();
/// default_registry().names().
SECUREMEMORY_API std::vector<std::string> backend_names();
/// default_registry().available(name).
SECUREMEMORY_API bool backend_available(std::string_view name);
/// default_registry().add(name, maker).
SECUREMEMORY_API void register_backend(std::string name, BackendMaker maker);

}  // namespace securememory
