// securememory: the defaults of the Backend interface (include/securememory/backend.hpp).
#include <securememory/backend.hpp>

#include "internal.hpp"

#include <sodium.h>

namespace securememory {

Backend::~Backend() = default;

BackendDescription Backend::describe() const noexcept { return {}; }

std::optional<ViolationKind> Backend::verify(const Region& /*r*/) const noexcept { return std::nullopt; }

void Backend::release_after_fork(Region& /*r*/) noexcept {}

void Backend::quarantine(Region& r) noexcept {
  try {
    (void)protect(r, Access::read_write);
    sodium_memzero(r.data, r.size);
    (void)protect(r, Access::none);
  } catch (const std::exception& e) {
    detail::log_error(std::string("quarantining a secret failed: ") + e.what());
  }
}

}  // namespace securememory
