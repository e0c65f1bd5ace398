// securememory: the library's log sink and its default, a private spdlog logger.
//
// Theory of operation: every message passes one threshold (an atomic level,
// checked before anything is formatted or locked), then goes to the sink in
// force. The sink is held as a shared pointer under a mutex: a caller takes
// a reference under the lock and calls the sink without it, so a sink may
// call back into the library (even set_log_sink) and a sink replaced during
// a call finishes that call. Without a user sink, messages go to the default
// sink: the public spdlog adapter (securememory/spdlog.hpp) around a logger
// named "securememory" on stderr, created on first use and never registered
// in spdlog's global registry. spdlog and fmt are compiled into the library
// header-only with hidden visibility (and the linker version script keeps
// every non-securememory symbol local), so the library neither exports nor
// imports a single spdlog or fmt symbol: a host with its own spdlog or fmt
// of any version cannot collide with it. The holder is allocated once and
// never destroyed, so secrets closed at exit can still log.
#include <securememory/log.hpp>
#include <securememory/spdlog.hpp>

#include "internal.hpp"

#include <atomic>
#include <memory>
#include <mutex>

#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace securememory {
namespace {

struct sink_holder {
  std::mutex mutex;
  std::shared_ptr<const log_sink> sink;      // null: the default
  std::shared_ptr<const log_sink> fallback;  // the default
};

sink_holder& holder() {
  static auto* h = [] {
    auto* made = new sink_holder{};  // never destroyed (exit-time use)
    auto logger = std::make_shared<spdlog::logger>("securememory", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_level(spdlog::level::trace);  // the threshold below decides
    made->fallback = std::make_shared<const log_sink>(spdlog_sink(std::move(logger)));
    return made;
  }();
  return *h;
}

constinit std::atomic<log_level> threshold{log_level::warn};

}  // namespace

log_sink set_log_sink(log_sink sink) {
  std::shared_ptr<const log_sink> replacement;
  if (sink) replacement = std::make_shared<const log_sink>(std::move(sink));
  sink_holder& h = holder();
  std::shared_ptr<const log_sink> previous;
  {
    const std::lock_guard lock(h.mutex);
    previous = std::exchange(h.sink, std::move(replacement));
  }
  return previous ? *previous : log_sink{};
}

log_level set_log_level(log_level level) noexcept { return threshold.exchange(level); }

log_level get_log_level() noexcept { return threshold.load(std::memory_order_relaxed); }

std::string_view to_string(log_level level) noexcept {
  switch (level) {
    case log_level::trace: return "trace";
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
    case log_level::critical: return "critical";
    case log_level::off: return "off";
  }
  return "unknown";
}

namespace detail {
namespace {
void log_at(log_level level, const std::string& message) noexcept {
  if (level < threshold.load(std::memory_order_relaxed)) return;
  try {
    sink_holder& h = holder();
    std::shared_ptr<const log_sink> sink;
    {
      const std::lock_guard lock(h.mutex);
      sink = h.sink ? h.sink : h.fallback;
    }
    (*sink)(level, message);
  } catch (...) {
    // A sink that throws must not turn a report into a crash.
  }
}
}  // namespace
void log_error(const std::string& message) noexcept { log_at(log_level::error, message); }
void log_warning(const std::string& message) noexcept { log_at(log_level::warn, message); }
void log_critical(const std::string& message) noexcept { log_at(log_level::critical, message); }
}  // namespace detail
}  // namespace securememory
