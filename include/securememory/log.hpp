// securememory: where the library's diagnostics go.
//
// The library logs through an spdlog logger named "securememory" that it
// does NOT register in spdlog's global registry (so it never collides with a
// host's logger of the same name). By default it writes warnings and errors
// to stderr. Nothing the library logs contains secret bytes.
#pragma once

#include <securememory/config.hpp>

#include <memory>

namespace spdlog {
class logger;
}

namespace securememory {

/// Replaces the library's logger; a null pointer restores the default.
/// Returns the previous logger. Thread-safe.
SECUREMEMORY_API std::shared_ptr<spdlog::logger> set_logger(std::shared_ptr<spdlog::logger> logger);

/// The logger in use. Thread-safe.
SECUREMEMORY_API std::shared_ptr<spdlog::logger> get_logger();

}  // namespace securememory
