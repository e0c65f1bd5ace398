// securememory: the defaults of the Backend interface (include/securememory/backend.hpp).
#include <securememory/backend.hpp>

#include "internal.hpp"

#include <sodium.h>

namespace securememory {

std::string_view to_string(Access a) noexcept {
  switch (a) {
    case Access::none: return "none";
    case Access::read: return "read";
    case Access::read_write: return "read_write";
  }
  return "unknown";
}

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
