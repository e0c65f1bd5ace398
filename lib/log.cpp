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
// in spdlog's global registry; its lock and the holder's are held across
// fork(), so a child never inherits them locked. spdlog and fmt are compiled into the library
// header-only with hidden visibility (and the linker version script keeps
// every non-securememory symbol local), so the library neither exports nor
// imports a single spdlog or fmt symbol: a host with its own spdlog or fmt
// of any version cannot collide with it. The holder is allocated once and
// never destroyed, so secrets closed at exit can still log.
#include <securememory/log.hpp>
#include <securememory/spdlog.hpp>

#include "internal.hpp"
#include "small_mutex.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <pthread.h>

#include <spdlog/logger.h>
#include <spdlog/details/console_globals.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace securememory {
namespace {

struct sink_holder {
  detail::small_mutex mutex;
  std::shared_ptr<const LogSink> sink;      // null: the default
  std::shared_ptr<const LogSink> fallback;  // the default
};

void before_fork() noexcept;
void after_fork() noexcept;

sink_holder& holder() {
  static auto* h = [] {
    auto* made = new sink_holder{};  // never destroyed (exit-time use)
    auto logger = std::make_shared<spdlog::logger>("securememory", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    logger->set_level(spdlog::level::trace);  // the threshold below decides
    made->fallback = std::make_shared<const LogSink>(spdlog_sink(std::move(logger)));
    pthread_atfork(before_fork, after_fork, after_fork);
    return made;
  }();
  return *h;
}

// fork(): the holder's lock and the default sink's lock (spdlog's console
// mutex, shared by its stderr sinks) are held across fork(), so a child
// can log even when another thread was logging at that moment.
void before_fork() noexcept {
  holder().mutex.lock();
  spdlog::details::console_mutex::mutex().lock();
}
void after_fork() noexcept {
  spdlog::details::console_mutex::mutex().unlock();
  holder().mutex.unlock();
}

constinit std::atomic<LogLevel> threshold{LogLevel::warn};

// Made while the library loads, never by a thread a fork could interrupt
// (detail::made_at_load).
// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool holder_made_at_load = detail::made_at_load([] { (void)holder(); });

}  // namespace

LogSink set_log_sink(LogSink sink) {
  std::shared_ptr<const LogSink> replacement;
  if (sink) replacement = std::make_shared<const LogSink>(std::move(sink));
  sink_holder& h = holder();
  std::shared_ptr<const LogSink> previous;
  {
    const std::lock_guard lock(h.mutex);
    previous = std::exchange(h.sink, std::move(replacement));
  }
  return previous ? *previous : LogSink{};
}

LogLevel set_log_level(LogLevel level) noexcept { return threshold.exchange(level); }

LogLevel get_log_level() noexcept { return threshold.load(std::memory_order_relaxed); }

std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::critical: return "critical";
    case LogLevel::off: return "off";
  }
  return "unknown";
}

namespace detail {
namespace {
void log_at(LogLevel level, const std::string& message) noexcept {
  if (level < threshold.load(std::memory_order_relaxed)) return;
  try {
    sink_holder& h = holder();
    std::shared_ptr<const LogSink> sink;
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
void log_error(const std::string& message) noexcept { log_at(LogLevel::error, message); }
void log_warning(const std::string& message) noexcept { log_at(LogLevel::warn, message); }
void log_critical(const std::string& message) noexcept { log_at(LogLevel::critical, message); }
}  // namespace detail
}  // namespace securememory
