// securememory: the backend registry, and where the built-ins are assembled.
//
// Theory of operation: a mutex-guarded sorted map from name to a shared,
// immutable maker. The lock is held only to look up or copy the map (no
// user code runs under it: the maker is copied as a shared_ptr and called
// after the lock is released, so a maker may itself consult the registry).
// Every registry links itself into one process-wide list, and a
// pthread_atfork handler holds the list's lock and every registry's lock
// across fork(): a child never inherits one locked by a thread that does
// not exist there. The default registry is allocated on first use and never
// destroyed (Botan #761: a registry torn down before the host's static
// objects made their destructors crash).
//
// Composite backends are assembled here: "sealed" is handed the function
// that picks its key's backend (secretmem when this host has it, else
// memguard); no backend looks another up by name. secretmem is built and
// registered on Linux only (SECUREMEMORY_HAVE_SECRETMEM, lib/meson.build):
// memfd_secret exists nowhere else, and the posix_only build leaves it out.
#include <securememory/registry.hpp>

#include "backends/memguard.hpp"
#include "backends/protectedmemory.hpp"
#if SECUREMEMORY_HAVE_SECRETMEM
#include "backends/secretmem.hpp"
#endif
#include "backends/sealed.hpp"
#include "internal.hpp"
#include "small_mutex.hpp"

#include <securememory/error.hpp>

#include <cstdlib>
#include <map>
#include <mutex>
#include <pthread.h>

namespace securememory {

struct detail::registry_impl {
  mutable detail::small_mutex mutex;
  std::map<std::string, std::shared_ptr<const BackendMaker>, std::less<>> makers;
  registry_impl* next = nullptr;  // the process-wide list (fork handling)
  registry_impl* prev = nullptr;
};

namespace {

// Every live registry, for the fork handlers.
struct registry_list {
  detail::small_mutex mutex;
  detail::registry_impl* head = nullptr;
};

void before_fork() noexcept;
void after_fork() noexcept;

registry_list& all_registries() {
  static auto* list = [] {
    auto* l = new registry_list();  // never destroyed: registries may outlive static destruction
    pthread_atfork(before_fork, after_fork, after_fork);
    return l;
  }();
  return *list;
}

void before_fork() noexcept {
  registry_list& l = all_registries();
  l.mutex.lock();
  for (detail::registry_impl* r = l.head; r != nullptr; r = r->next) r->mutex.lock();
}

void after_fork() noexcept {
  registry_list& l = all_registries();
  for (detail::registry_impl* r = l.head; r != nullptr; r = r->next) r->mutex.unlock();
  l.mutex.unlock();
}

// The registry's maker for `name`, or the error naming the known ones.
std::shared_ptr<const BackendMaker> find(const detail::registry_impl& r, std::string_view name) {
  std::string known;
  {
    const std::lock_guard lock(r.mutex);
    const auto it = r.makers.find(name);
    if (it != r.makers.end()) return it->second;
    for (const auto& entry : r.makers) known += (known.empty() ? "" : ", ") + detail::quoted(entry.first);
  }
  throw error(errc::unknown_backend, "unknown securememory backend " + detail::quoted(name) +
                                         "; registered backends: " + (known.empty() ? "(none)" : known));
}

// The backend sealed keeps its key in: the strongest this host has.
std::shared_ptr<backend> strongest_key_backend() {
#if SECUREMEMORY_HAVE_SECRETMEM
  try {
    return detail::make_secretmem();
  } catch (const error& e) {
    if (e.code_value() != errc::backend_unavailable) throw;
  }
#endif
  return detail::make_memguard();
}

std::shared_ptr<backend> make_default_sealed() {
  static const auto* instance = new std::shared_ptr<backend>(detail::make_sealed(strongest_key_backend));  // never destroyed
  return *instance;
}

// Made while the library loads (detail::made_at_load): a forked child never
// finds it half-made by a thread it does not have.
// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool sealed_made_at_load = detail::made_at_load([] { (void)make_default_sealed(); });

}  // namespace

Registry::Registry() : impl_(new detail::registry_impl()) {
  registry_list& l = all_registries();
  const std::lock_guard lock(l.mutex);
  impl_->next = l.head;
  if (l.head != nullptr) l.head->prev = impl_;
  l.head = impl_;
}

Registry::~Registry() {
  {
    registry_list& l = all_registries();
    const std::lock_guard lock(l.mutex);
    if (impl_->prev != nullptr) impl_->prev->next = impl_->next;
    if (impl_->next != nullptr) impl_->next->prev = impl_->prev;
    if (l.head == impl_) l.head = impl_->next;
  }
  delete impl_;
}

void Registry::add(std::string name, BackendMaker maker) {
  if (name.empty()) throw error(errc::invalid_argument, "register_backend: the backend name must not be empty");
  if (!maker) throw error(errc::invalid_argument, "register_backend: the maker for " + detail::quoted(name) + " is null");
  auto shared = std::make_shared<const BackendMaker>(std::move(maker));
  const std::lock_guard lock(impl_->mutex);
  if (impl_->makers.contains(name)) {
    throw error(errc::duplicate_backend,
                "register_backend: a backend named " + detail::quoted(name) + " is already registered; pick another name");
  }
  impl_->makers.emplace(std::move(name), std::move(shared));
}

std::vector<std::string> Registry::names() const {
  const std::lock_guard lock(impl_->mutex);
  std::vector<std::string> out;
  out.reserve(impl_->makers.size());
  for (const auto& entry : impl_->makers) out.push_back(entry.first);
  return out;
}

bool Registry::available(std::string_view name) const {
  try {
    return (*find(*impl_, name))() != nullptr;
  } catch (const error&) {
    return false;
  }
}

SecretFactory Registry::make_factory(std::string_view name) const {
  const auto maker = find(*impl_, name);
  std::shared_ptr<backend> b = (*maker)();
  if (!b) throw error(errc::invalid_argument, "the maker of backend " + detail::quoted(name) + " returned no backend");
  return SecretFactory(std::move(b));
}

SecretFactory Registry::make_factory(std::string_view name, const Guarantees& required) const {
  SecretFactory factory = make_factory(name);
  const Guarantees got = factory.guarantees();
  std::string missing;
  for (const Guarantee g : all_guarantees()) {
    if (!has(required, g) || has(got, g)) continue;
    std::string providers;
    for (const auto& other : names()) {
      try {
        const auto maker = find(*impl_, other);
        const std::shared_ptr<Backend> b = (*maker)();
        if (b && has(b->describe().provides, g)) providers += (providers.empty() ? "" : ", ") + detail::quoted(other);
      } catch (const error&) {
        // not available on this host: it provides nothing here
      }
    }
    missing += fmt::format("{}{} ({}; {})", missing.empty() ? "" : ", ", to_string(g), explain(g),
                           providers.empty() ? "no registered backend provides it on this host"
                                             : "provided here by " + providers);
  }
  if (!missing.empty()) {
    throw error(errc::backend_unavailable, "backend " + detail::quoted(name) +
                                               " does not provide what was required on this host: " + missing);
  }
  return factory;
}

namespace {

// Runs a throwing make_factory, reporting through ec instead.
template <class F>
std::optional<SecretFactory> reporting(std::error_code& ec, F&& make) noexcept {
  ec.clear();
  try {
    return make();
  } catch (const std::exception& e) {
    detail::set_error_code(ec, e);
  }
  return std::nullopt;
}

}  // namespace

std::optional<SecretFactory> Registry::make_factory(std::string_view name, std::error_code& ec) const noexcept {
  return reporting(ec, [&] { return make_factory(name); });
}

std::optional<SecretFactory> Registry::make_factory(std::string_view name, const Guarantees& required,
                                                    std::error_code& ec) const noexcept {
  return reporting(ec, [&] { return make_factory(name, required); });
}

Registry& default_registry() {
  static Registry* instance = [] {
    auto* r = new Registry();  // never destroyed: see the file comment
    r->add("memguard", detail::make_memguard);
    r->add("protectedmemory", detail::make_protectedmemory);
#if SECUREMEMORY_HAVE_SECRETMEM
    r->add("secretmem", detail::make_secretmem);
#endif
    r->add("sealed", make_default_sealed);
    return r;
  }();
  return *instance;
}

namespace {
// Made while the library loads (detail::made_at_load): a forked child never
// finds it half-made by a thread it does not have.
// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool registries_made_at_load = detail::made_at_load([] {
  (void)all_registries();
  (void)default_registry();
});
}  // namespace

SecretFactory make_factory(std::string_view backend) { return default_registry().make_factory(backend); }

SecretFactory make_factory(std::string_view backend, const Guarantees& required) {
  return default_registry().make_factory(backend, required);
}

SecretFactory make_factory() {
  // Only read: a concurrent setenv() would be the caller's data race, as for any getenv().
  const char* env = std::getenv("SECUREMEMORY_BACKEND");  // NOLINT(concurrency-mt-unsafe)
  const char* require = std::getenv("SECUREMEMORY_REQUIRE");  // NOLINT(concurrency-mt-unsafe)
  const std::string_view name = env != nullptr && *env != '\0' ? std::string_view(env) : std::string_view("protectedmemory");
  if (require == nullptr || *require == '\0') return make_factory(name);
  return make_factory(name, parse_guarantees(require));
}

std::optional<SecretFactory> make_factory(std::string_view backend, std::error_code& ec) noexcept {
  return reporting(ec, [&] { return make_factory(backend); });
}

std::optional<SecretFactory> make_factory(std::string_view backend, const Guarantees& required,
                                          std::error_code& ec) noexcept {
  return reporting(ec, [&] { return make_factory(backend, required); });
}

std::optional<SecretFactory> make_factory(std::error_code& ec) noexcept {
  return reporting(ec, [] { return make_factory(); });
}

std::vector<std::string> backend_names() { return default_registry().names(); }
bool backend_available(std::string_view name) { return default_registry().available(name); }
void register_backend(std::string name, BackendMaker maker) { default_registry().add(std::move(name), std::move(maker)); }

}  // namespace securememory
