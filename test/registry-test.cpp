// The registry (names, duplicates, unknown names, user backends, the
// environment variable) and the log sink (replaceable, levels and a
// threshold, never given secret bytes).
#include "support.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

using securememory::errc;

namespace {

using test::heap_backend;

// Collects the library's log messages (the sink may be called from any thread).
struct capture {
  std::mutex mutex;
  std::vector<std::pair<securememory::LogLevel, std::string>> lines;

  securememory::LogSink sink() {
    return [this](securememory::LogLevel level, std::string_view message) {
      const std::lock_guard lock(mutex);
      lines.emplace_back(level, message);
    };
  }
};

}  // namespace

TEST_CASE("the built-in protectedmemory backend is registered and available", "[registry]") {
  const auto names = securememory::backend_names();
  CHECK(std::find(names.begin(), names.end(), "protectedmemory") != names.end());
  CHECK(std::is_sorted(names.begin(), names.end()));
  CHECK(securememory::backend_available("protectedmemory"));
  CHECK_FALSE(securememory::backend_available("no-such-backend"));
  CHECK(securememory::make_factory("protectedmemory").backend() == "protectedmemory");
}

TEST_CASE("an unknown backend name is unknown_backend, listing the known names", "[registry][errors]") {
  try {
    (void)securememory::make_factory("no-such-backend");
    FAIL("no exception");
  } catch (const securememory::error& e) {
    CHECK(e.code() == errc::unknown_backend);
    const std::string what = e.what();
    CHECK(what.find("no-such-backend") != std::string::npos);
    CHECK(what.find("protectedmemory") != std::string::npos);
  }
  CHECK(test::error_of([] { (void)securememory::make_factory(""); }) == errc::unknown_backend);
  CHECK(test::error_of([] { (void)securememory::make_factory(std::string(10000, 'x')); }) == errc::unknown_backend);
  CHECK(test::error_of([] { (void)securememory::make_factory("pr\xc3\xb6tected\n"); }) == errc::unknown_backend);
}

TEST_CASE("names from callers are cut short and escaped in every message", "[registry][errors]") {
  auto no_control_characters = [](const std::string& s) {
    return std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
  };
  const std::string huge(std::size_t{16} << 20U, 'x');
  const auto unknown = test::caught([&] { (void)securememory::make_factory(huge); });
  REQUIRE(unknown);
  CHECK(unknown->code == errc::unknown_backend);
  CHECK(unknown->what.size() < 1024);  // 16 MiB before the fix
  const std::string evil = "evil\n\x1b[31mred\r\"quoted\"";
  const auto escaped = test::caught([&] { (void)securememory::make_factory(evil); });
  REQUIRE(escaped);
  CHECK(no_control_characters(escaped->what));
  CHECK(escaped->what.find("evil\\x0a\\x1b[31mred\\x0d\\x22quoted\\x22") != std::string::npos);
  // The environment variable too.
  setenv("SECUREMEMORY_BACKEND", evil.c_str(), 1);
  const auto from_env = test::caught([] { (void)securememory::make_factory(); });
  unsetenv("SECUREMEMORY_BACKEND");
  REQUIRE(from_env);
  CHECK(no_control_characters(from_env->what));
  // Registration errors, and the registered names listed in an error.
  securememory::registry reg;
  reg.add(huge, [] { return std::make_shared<heap_backend>(); });
  reg.add(evil, [] { return std::make_shared<heap_backend>(); });
  const auto duplicate = test::caught([&] { reg.add(huge, [] { return std::make_shared<heap_backend>(); }); });
  REQUIRE(duplicate);
  CHECK(duplicate->code == errc::duplicate_backend);
  CHECK(duplicate->what.size() < 1024);
  const auto listed = test::caught([&] { (void)reg.make_factory("absent"); });
  REQUIRE(listed);
  CHECK(listed->what.size() < 1024);
  CHECK(no_control_characters(listed->what));
  const auto null_maker = test::caught([&] { reg.add(evil + huge, nullptr); });
  REQUIRE(null_maker);
  CHECK(null_maker->what.size() < 1024);
  CHECK(no_control_characters(null_maker->what));
}

TEST_CASE("a duplicate registration is duplicate_backend and keeps the first", "[registry][errors]") {
  securememory::registry reg;
  reg.add("one", [] { return std::make_shared<heap_backend>(); });
  CHECK(test::error_of([&] { reg.add("one", [] { return std::make_shared<heap_backend>(); }); }) ==
        errc::duplicate_backend);
  CHECK(test::error_of([] { securememory::register_backend("protectedmemory", [] { return std::make_shared<heap_backend>(); }); }) ==
        errc::duplicate_backend);
  CHECK(reg.names() == std::vector<std::string>{"one"});
  CHECK(test::error_of([&] { reg.add("", [] { return std::make_shared<heap_backend>(); }); }) == errc::invalid_argument);
  CHECK(test::error_of([&] { reg.add("null", nullptr); }) == errc::invalid_argument);
  CHECK(reg.names() == std::vector<std::string>{"one"});
}

SM_TEST("a user-registered backend is used by name through the shared state machine", "[registry]") {
  auto backend = std::make_shared<heap_backend>();
  securememory::register_backend("test-heap", [backend] { return backend; });
  CHECK(securememory::backend_available("test-heap"));
  auto factory = securememory::make_factory("test-heap");
  auto source = test::pattern(40);
  const auto expected = source;
  {
    auto secret = factory.create(source);
    CHECK(backend->allocations == 1);
    CHECK(backend->last_access == securememory::access::none);  // no-access once filled
    CHECK(secret.with_bytes([&](std::span<const std::byte> b) {
      return backend->last_access == securememory::access::read && std::equal(b.begin(), b.end(), expected.begin());
    }));
    CHECK(backend->last_access == securememory::access::none);
  }
  CHECK(backend->releases == 1);
}

TEST_CASE("a maker that reports backend_unavailable makes the backend unavailable", "[registry]") {
  securememory::registry reg;
  reg.add("absent", []() -> std::shared_ptr<securememory::backend> {
    throw securememory::error(errc::backend_unavailable, "needs a newer kernel");
  });
  CHECK_FALSE(reg.available("absent"));
  CHECK(test::error_of([&] { (void)reg.make_factory("absent"); }) == errc::backend_unavailable);
  CHECK(reg.names() == std::vector<std::string>{"absent"});
}

TEST_CASE("make_factory() reads SECUREMEMORY_BACKEND, else protectedmemory", "[registry]") {
  unsetenv("SECUREMEMORY_BACKEND");
  CHECK(securememory::make_factory().backend() == "protectedmemory");
  setenv("SECUREMEMORY_BACKEND", "no-such-backend", 1);
  CHECK(test::error_of([] { (void)securememory::make_factory(); }) == errc::unknown_backend);
  setenv("SECUREMEMORY_BACKEND", "", 1);
  CHECK(securememory::make_factory().backend() == "protectedmemory");
  unsetenv("SECUREMEMORY_BACKEND");
}

TEST_CASE("the log sink is replaceable, gets levels, and never sees secret bytes", "[log]") {
  capture captured;
  auto previous = securememory::set_log_sink(captured.sink());
  CHECK_FALSE(previous);  // the default (the library's own spdlog logger) was in force
  {
    auto source = test::pattern(32, 99);
    const auto expected = source;
    auto secret = securememory::make_factory("protectedmemory").create(source);
    // munmap fails inside the destructor: it must not throw, and must log.
    const test::page_cache_limit uncached(0);  // so that the release unmaps
    test::fault_injector fail_munmap(securememory::detail::os::call::munmap, EINVAL);
    secret = securememory::Secret{};
    REQUIRE(fail_munmap.injected() == 1);
    REQUIRE_FALSE(captured.lines.empty());
    for (const auto& [level, line] : captured.lines) {
      CHECK(level == securememory::LogLevel::error);
      CHECK(line.find("munmap") != std::string::npos);
      CHECK(line.find(std::string(reinterpret_cast<const char*>(expected.data()), 8)) == std::string::npos);
    }
  }
  // The sink handed back is the one installed; an empty sink restores the default.
  auto mine = securememory::set_log_sink({});
  REQUIRE(mine);
  const auto before = captured.lines.size();
  mine(securememory::LogLevel::warn, "through the returned sink");
  CHECK(captured.lines.size() == before + 1);
  CHECK_FALSE(securememory::set_log_sink(std::move(previous)));
}

TEST_CASE("the log threshold drops messages below it, for any sink", "[log]") {
  capture captured;
  const auto previous_sink = securememory::set_log_sink(captured.sink());
  CHECK(securememory::get_log_level() == securememory::LogLevel::warn);  // the default
  auto fail_release = [] {
    auto secret = securememory::make_factory("protectedmemory").create_random(16);
    const test::page_cache_limit uncached(0);
    test::fault_injector fail_munmap(securememory::detail::os::call::munmap, EINVAL);
    secret = securememory::Secret{};  // logs one error
  };
  CHECK(securememory::set_log_level(securememory::LogLevel::critical) == securememory::LogLevel::warn);
  fail_release();
  CHECK(captured.lines.empty());  // error < critical: dropped
  CHECK(securememory::set_log_level(securememory::LogLevel::off) == securememory::LogLevel::critical);
  fail_release();
  CHECK(captured.lines.empty());
  CHECK(securememory::set_log_level(securememory::LogLevel::error) == securememory::LogLevel::off);
  fail_release();
  CHECK(captured.lines.size() == 1);
  securememory::set_log_level(securememory::LogLevel::warn);
  securememory::set_log_sink(previous_sink);
}

TEST_CASE("log levels have names", "[log]") {
  using securememory::LogLevel;
  CHECK(securememory::to_string(LogLevel::trace) == "trace");
  CHECK(securememory::to_string(LogLevel::debug) == "debug");
  CHECK(securememory::to_string(LogLevel::info) == "info");
  CHECK(securememory::to_string(LogLevel::warn) == "warn");
  CHECK(securememory::to_string(LogLevel::error) == "error");
  CHECK(securememory::to_string(LogLevel::critical) == "critical");
  CHECK(securememory::to_string(LogLevel::off) == "off");
  CHECK(securememory::to_string(static_cast<LogLevel>(42)) == "unknown");
}

TEST_CASE("make_factory(name, required) refuses a backend that lacks a required guarantee, naming who has it", "[registry][guarantees]") {
  securememory::Guarantees required;
  required.locked = true;
  required.outside_direct_map = true;
  required.canary = true;
  const auto refused = test::caught([&] { (void)securememory::make_factory("protectedmemory", required); });
  REQUIRE(refused);
  CHECK(refused->code == errc::backend_unavailable);
  CHECK(refused->what.find("outside_direct_map") != std::string::npos);
  CHECK(refused->what.find("canary") != std::string::npos);
  CHECK(refused->what.find("locked (") == std::string::npos);  // provided: not listed
  CHECK(refused->what.find("\"memguard\"") != std::string::npos);  // who provides the canary
  if (securememory::backend_available("secretmem")) CHECK(refused->what.find("\"secretmem\"") != std::string::npos);
  securememory::Guarantees guarded;
  guarded.guard_pages = true;
  guarded.canary = true;
  CHECK(securememory::make_factory("memguard", guarded).backend() == "memguard");
  CHECK(securememory::make_factory("protectedmemory", securememory::Guarantees{}).backend() == "protectedmemory");
}

TEST_CASE("guarantees by name: every field, round trip through text, unknown names refused", "[guarantees]") {
  securememory::Guarantees all;
  for (const auto g : securememory::all_guarantees()) {
    CAPTURE(securememory::to_string(g));
    CHECK(securememory::guarantee_from_string(securememory::to_string(g)) == g);
    CHECK_FALSE(securememory::explain(g).empty());
    CHECK_FALSE(securememory::has(all, g));
    securememory::set(all, g);
    CHECK(securememory::has(all, g));
  }
  CHECK(securememory::all_guarantees().size() == 11);
  const auto text = securememory::to_string(all);
  const auto parsed = securememory::parse_guarantees(text);
  CHECK(securememory::to_string(parsed) == text);
  CHECK(securememory::to_string(securememory::parse_guarantees(" locked , canary,, ")) == "locked,canary");
  const auto bad = test::caught([] { (void)securememory::parse_guarantees("locked,warp_drive"); });
  REQUIRE(bad);
  CHECK(bad->code == errc::invalid_argument);
  CHECK(bad->what.find("\"warp_drive\"") != std::string::npos);
}

TEST_CASE("each backend's guarantees are its own description; sealed tells where its key lives", "[guarantees]") {
  for (const std::string name : {"protectedmemory", "memguard", "secretmem", "sealed"}) {  // the built-ins
    if (!securememory::backend_available(name)) continue;
    CAPTURE(name);
    const auto factory = securememory::make_factory(name);
    const auto g = factory.guarantees();
    CHECK(g.locked);
    // What the platform layer provides in this build (lib/os/): the
    // posix_only build has neither, and says so.
    CHECK(g.excluded_from_core_dumps == test::dump_exclusion_here());
    CHECK(g.wiped_on_release);
    CHECK(g.hidden_from_fork_children == (securememory::detail::os::fork_hiding() != securememory::detail::os::fork_rule::none));
    CHECK(g.no_access_while_idle != g.encrypted_at_rest);  // one or the other keeps it out of reach while idle
    CHECK(factory.key_backend().empty() == !g.encrypted_at_rest);
  }
  const auto sealed = securememory::make_factory("sealed");
  const bool secretmem_here = securememory::backend_available("secretmem");
  CHECK(sealed.key_backend() == (secretmem_here ? "secretmem" : "memguard"));
  CHECK(sealed.guarantees().key_outside_direct_map == secretmem_here);
  // secretmem is registered exactly where it is built (Linux, not posix_only).
  const auto names = securememory::backend_names();
  CHECK((std::find(names.begin(), names.end(), "secretmem") != names.end()) == (SECUREMEMORY_HAVE_SECRETMEM != 0));
  // A user backend that describes nothing guarantees nothing.
  securememory::registry reg;
  reg.add("bare", [] { return std::make_shared<test::heap_backend>(); });
  CHECK(securememory::to_string(reg.make_factory("bare").guarantees()).empty());
}
