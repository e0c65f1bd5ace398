// securememory: route the library's messages into your own spdlog logger.
//
// Header-only and optional: the library itself exports no spdlog type or
// symbol, so only programs that include this header need spdlog, and they
// use their own spdlog and fmt (any version with spdlog::logger::log(level,
// string_view_t)). The umbrella header securememory.hpp does not include it.
//
//     #include <securememory/spdlog.hpp>
//     securememory::set_logger(my_logger);              // or:
//     securememory::set_log_sink(securememory::spdlog_sink(my_logger));
//
// The library's threshold (set_log_level, default warn) filters first, then
// the logger's own level.
#pragma once

#include <securememory/log.hpp>

#include <memory>
#include <string_view>
#include <utility>

#include <spdlog/logger.h>

namespace securememory {

/// The spdlog level for a securememory log level (the same names; error is
/// spdlog's err). Never throws.
[[nodiscard]] inline spdlog::level::level_enum to_spdlog_level(log_level level) noexcept {
  switch (level) {
    case log_level::trace: return spdlog::level::trace;
    case log_level::debug: return spdlog::level::debug;
    case log_level::info: return spdlog::level::info;
    case log_level::warn: return spdlog::level::warn;
    case log_level::error: return spdlog::level::err;
    case log_level::critical: return spdlog::level::critical;
    case log_level::off: return spdlog::level::off;
  }
  return spdlog::level::critical;
}

/// A sink that writes each message, unformatted, to `logger` at the matching
/// level; the sink shares ownership of the logger. A null logger gives an
/// empty sink (set_log_sink then restores the library's default). Throws
/// only std::bad_alloc.
[[nodiscard]] inline log_sink spdlog_sink(std::shared_ptr<spdlog::logger> logger) {
  if (!logger) return {};
  return [logger = std::move(logger)](log_level level, std::string_view message) {
    logger->log(to_spdlog_level(level), spdlog::string_view_t(message.data(), message.size()));
  };
}

/// set_log_sink(spdlog_sink(logger)): sends the library's messages to
/// `logger`; a null logger restores the library's default. Returns the
/// previous sink (empty when the default was in force). Thread-safe. Throws
/// only std::bad_alloc. (The library itself used to take and return
/// std::shared_ptr<spdlog::logger>; see docs/design.md, "Logging".)
inline log_sink set_logger(std::shared_ptr<spdlog::logger> logger) {
  return set_log_sink(spdlog_sink(std::move(logger)));
}

}  // namespace securememory
