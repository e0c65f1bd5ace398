// securememory: where the library's diagnostics go.
//
// The library reports failures it cannot throw (a close that failed inside a
// destructor, a violation handler that threw, a malformed environment
// variable) as log messages. Each message goes to one process-wide sink: a
// function taking a level and the text. By default the sink is the library's
// own spdlog logger named "securememory", writing to stderr; it is private
// to the library (never registered in spdlog's global registry, and no
// spdlog or fmt symbol is exported), so a host's own spdlog or fmt, of any
// version, never meets it. To send the messages to your own spdlog logger,
// include <securememory/spdlog.hpp> (the only header that needs spdlog).
//
// Nothing the library logs contains secret bytes: messages hold sizes,
// backend names, system calls and errno values.
#pragma once

#include <securememory/config.hpp>

#include <functional>
#include <string_view>

namespace securememory {

/// How severe a message is, least severe first. The values and their order
/// match spdlog's levels (trace = 0 ... critical = 5, off = 6).
enum class LogLevel : unsigned char {
  trace,
  debug,
  info,
  warn,      ///< Something was ignored or worked around (a malformed environment variable).
  error,     ///< An operation failed and could not report it by throwing (a close inside a destructor).
  critical,  ///< An integrity violation was found.
  off,       ///< As a threshold: nothing is delivered. Never the level of a message.
};

/// Receives one message: its level and its text (valid only during the
/// call; copy it to keep it). Called on the thread that logs, with no
/// library lock held, possibly from several threads at once and during
/// process exit. An exception it throws is caught and dropped.
using LogSink = std::function<void(LogLevel level, std::string_view message)>;

/// Installs the process-wide sink and returns the previous one. An empty
/// sink restores the default (the library's private spdlog logger on
/// stderr); an empty result means the default was in force, so passing the
/// result back restores the previous state exactly. A sink replaced while
/// another thread is inside it finishes that call. Thread-safe. Throws only
/// what copying the std::function throws (std::bad_alloc).
SECUREMEMORY_API LogSink set_log_sink(LogSink sink);

/// Sets the process-wide threshold and returns the previous one: messages
/// below it are dropped before any sink sees them (the default sink
/// included). Default: LogLevel::warn; LogLevel::off silences the
/// library. Thread-safe, never throws.
SECUREMEMORY_API LogLevel set_log_level(LogLevel level) noexcept;

/// The threshold in force. Thread-safe, never throws.
[[nodiscard]] SECUREMEMORY_API LogLevel get_log_level() noexcept;

/// Text names, for messages ("trace", "debug", "info", "warn", "error",
/// "critical", "off"; "unknown" for a value outside the enum).
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(LogLevel level) noexcept;

/// The names of earlier versions, kept so that code written against them
/// still compiles (docs/design.md, "Names").
using log_level = LogLevel;
using log_sink = LogSink;

}  // namespace securememory
