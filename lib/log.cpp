// securememory: the library's logger.
//
// Theory of operation: one logger named "securememory", created on first
// use and never registered in spdlog's global registry (a host that
// registers its own "securememory" logger does not collide with ours). The
// host may replace it with set_logger(). The holder is allocated once and
// never destroyed, so secrets closed at exit can still log.
#include <securememory/log.hpp>

#include "internal.hpp"

#include <mutex>

#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace securememory {
namespace {

struct logger_holder {
  std::mutex mutex;
  std::shared_ptr<spdlog::logger> logger;
};

std::shared_ptr<spdlog::logger> make_default_logger() {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("securememory", std::move(sink));
  logger->set_level(spdlog::level::warn);
  return logger;
}

logger_holder& holder() {
  static auto* h = new logger_holder{{}, make_default_logger()};  // never destroyed (exit-time use)
  return *h;
}

}  // namespace

std::shared_ptr<spdlog::logger> set_logger(std::shared_ptr<spdlog::logger> logger) {
  if (!logger) logger = make_default_logger();
  logger_holder& h = holder();
  const std::lock_guard lock(h.mutex);
  std::swap(h.logger, logger);
  return logger;
}

std::shared_ptr<spdlog::logger> get_logger() {
  logger_holder& h = holder();
  const std::lock_guard lock(h.mutex);
  return h.logger;
}

namespace detail {
namespace {
void log_at(spdlog::level::level_enum level, const std::string& message) noexcept {
  try {
    get_logger()->log(level, "{}", message);
  } catch (...) {
    // A logger that throws must not turn a report into a crash.
  }
}
}  // namespace
void log_error(const std::string& message) noexcept { log_at(spdlog::level::err, message); }
void log_warning(const std::string& message) noexcept { log_at(spdlog::level::warn, message); }
void log_critical(const std::string& message) noexcept { log_at(spdlog::level::critical, message); }
}  // namespace detail
}  // namespace securememory
