// The spdlog adapter (include/securememory/spdlog.hpp), as a user of the
// installed library would use it: this program links the shared
// libsecurememory.so (not the internal archive) and the system's compiled
// spdlog, while the library holds its own private, header-only spdlog. Only
// the public API is used; a user backend whose release fails makes the
// library log.
#include <securememory/securememory.hpp>
#include <securememory/spdlog.hpp>

#include "heap-region.hpp"

#include <catch2/catch.hpp>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

class capture_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::vector<std::pair<spdlog::level::level_enum, std::string>> lines;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines.emplace_back(msg.level, std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}
};

// Heap memory whose release wipes and frees it, then reports a failure: a
// secret's destructor then has to log "closing a secret failed".
class failing_release_backend final : public securememory::Backend {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "spdlog-adapter-test"; }
  [[nodiscard]] securememory::Region allocate(std::size_t size) override { return test::heap_region(size); }
  std::optional<securememory::ViolationKind> protect(securememory::Region& r, securememory::Access a) override {
    r.current = a;
    return std::nullopt;
  }
  void release(securememory::Region& r) override {
    test::release_heap_region(r);
    throw securememory::error(securememory::errc::release_failed, "spdlog-adapter-test: release fails on purpose");
  }
};

void destroy_a_secret_whose_release_fails() {
  static const bool registered = [] {
    securememory::register_backend("spdlog-adapter-test", [] { return std::make_shared<failing_release_backend>(); });
    return true;
  }();
  (void)registered;
  auto secret = securememory::make_factory("spdlog-adapter-test").create_random(16);
  (void)secret;  // the destructor's close fails and logs
}

}  // namespace

TEST_CASE("set_logger routes the library's messages into the user's spdlog logger", "[log][spdlog]") {
  auto sink = std::make_shared<capture_sink>();
  auto mine = std::make_shared<spdlog::logger>("mine", sink);
  mine->set_level(spdlog::level::trace);
  CHECK_FALSE(securememory::set_logger(mine));  // the library's default was in force
  destroy_a_secret_whose_release_fails();
  REQUIRE(sink->lines.size() == 1);
  CHECK(sink->lines[0].first == spdlog::level::err);
  CHECK(sink->lines[0].second.find("release fails on purpose") != std::string::npos);
  // The library registered no logger in the program's spdlog registry.
  CHECK(spdlog::get("securememory") == nullptr);

  // set_logger(nullptr) restores the default and hands back the adapter sink.
  const auto previous = securememory::set_logger(nullptr);
  REQUIRE(previous);
  previous(securememory::LogLevel::warn, "through the returned sink");
  CHECK(sink->lines.size() == 2);
  CHECK_FALSE(securememory::set_log_sink({}));
}

TEST_CASE("spdlog_sink maps every level and passes the text unformatted", "[log][spdlog]") {
  using securememory::LogLevel;
  auto sink = std::make_shared<capture_sink>();
  auto mine = std::make_shared<spdlog::logger>("mine", sink);
  mine->set_level(spdlog::level::trace);
  const auto adapter = securememory::spdlog_sink(mine);
  const std::pair<LogLevel, spdlog::level::level_enum> levels[] = {
      {LogLevel::trace, spdlog::level::trace}, {LogLevel::debug, spdlog::level::debug},
      {LogLevel::info, spdlog::level::info},   {LogLevel::warn, spdlog::level::warn},
      {LogLevel::error, spdlog::level::err},   {LogLevel::critical, spdlog::level::critical},
  };
  for (const auto& [ours, theirs] : levels) adapter(ours, "{} is not a format string");
  REQUIRE(sink->lines.size() == std::size(levels));
  for (std::size_t i = 0; i < std::size(levels); ++i) {
    CHECK(sink->lines[i].first == levels[i].second);
    CHECK(sink->lines[i].second == "{} is not a format string");
  }
  CHECK(securememory::to_spdlog_level(LogLevel::off) == spdlog::level::off);
  CHECK_FALSE(securememory::spdlog_sink(nullptr));
}

TEST_CASE("the library's threshold filters before the user's logger", "[log][spdlog]") {
  auto sink = std::make_shared<capture_sink>();
  auto mine = std::make_shared<spdlog::logger>("mine", sink);
  mine->set_level(spdlog::level::trace);
  securememory::set_logger(mine);
  const auto previous = securememory::set_log_level(securememory::LogLevel::critical);
  destroy_a_secret_whose_release_fails();  // an error: below critical
  CHECK(sink->lines.empty());
  securememory::set_log_level(previous);
  destroy_a_secret_whose_release_fails();
  CHECK(sink->lines.size() == 1);
  securememory::set_logger(nullptr);
}
