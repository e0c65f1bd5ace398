// securememory: the backend registry.
//
// Theory of operation: a mutex-guarded sorted map from name to maker. The
// mutex is released before a maker runs, so a maker may itself consult the
// registry. The default registry is allocated on first use and never
// destroyed (Botan #761: a registry torn down before the host's static
// objects made their destructors crash).
#include <securememory/registry.hpp>

#include "backends/memguard.hpp"
#include "backends/protectedmemory.hpp"
#include "backends/secretmem.hpp"
#include "backends/sealed.hpp"
#include "internal.hpp"

#include <securememory/error.hpp>

#include <cstdlib>

namespace securememory {

void registry::add(std::string name, BackendMaker maker) {
  if (name.empty()) throw error(errc::invalid_argument, "register_backend: the backend name must not be empty");
  if (!maker) throw error(errc::invalid_argument, "register_backend: the maker for \"" + name + "\" is null");
  const std::lock_guard lock(mutex_);
  if (makers_.contains(name)) {
    throw error(errc::duplicate_backend,
                "register_backend: a backend named \"" + name + "\" is already registered; pick another name");
  }
  makers_.emplace(std::move(name), std::move(maker));
}

std::vector<std::string> registry::names() const {
  const std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  out.reserve(makers_.size());
  for (const auto& entry : makers_) out.push_back(entry.first);
  return out;
}

BackendMaker registry::find(std::string_view name) const {
  const std::lock_guard lock(mutex_);
  const auto it = makers_.find(name);
  if (it != makers_.end()) return it->second;
  std::string known;
  for (const auto& entry : makers_) known += (known.empty() ? "" : ", ") + entry.first;
  // The name is the caller's text (maybe an environment variable): quote it, bounded.
  const std::string shown(name.substr(0, 64));
  throw error(errc::unknown_backend, "unknown securememory backend \"" + shown + (name.size() > 64 ? "...\"" : "\"") +
                                         "; registered backends: " + (known.empty() ? "(none)" : known));
}

bool registry::available(std::string_view name) const {
  BackendMaker maker;
  try {
    maker = find(name);
    return maker() != nullptr;
  } catch (const error&) {
    return false;
  }
}

SecretFactory registry::make_factory(std::string_view name) const {
  const BackendMaker maker = find(name);
  return SecretFactory(maker());
}

std::shared_ptr<backend> detail::make_registered_backend(const registry& r, std::string_view name) {
  return r.find(name)();
}

registry& default_registry() {
  static registry* instance = [] {
    auto* r = new registry();  // never destroyed: see the file comment
    r->add("memguard", detail::make_memguard);
    r->add("protectedmemory", detail::make_protectedmemory);
    r->add("secretmem", detail::make_secretmem);
    r->add("sealed", detail::make_sealed);
    return r;
  }();
  return *instance;
}

SecretFactory make_factory(std::string_view backend) { return default_registry().make_factory(backend); }

SecretFactory make_factory() {
  // Only read: a concurrent setenv() would be the caller's data race, as for any getenv().
  const char* env = std::getenv("SECUREMEMORY_BACKEND");  // NOLINT(concurrency-mt-unsafe)
  return make_factory(env != nullptr && *env != '\0' ? std::string_view(env) : std::string_view("protectedmemory"));
}

std::vector<std::string> backend_names() { return default_registry().names(); }
bool backend_available(std::string_view name) { return default_registry().available(name); }
void register_backend(std::string name, BackendMaker maker) { default_registry().add(std::move(name), std::move(maker)); }

}  // namespace securememory
