// Promises of the C API (include/securememory/securememory.h) that need C++
// on the other side: exceptions reaching the boundary, and handlers or
// sinks set through one API replaced through the other. The C11 program in
// test/c-api/ covers the rest of the C API.
#include "support.hpp"

#include "internal.hpp"

#include <securememory/securememory.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <vector>

using securememory::errc;

namespace {

std::string last_message() { return securememory_last_error_message(); }

// A user backend whose allocate throws what `thrower` throws.
class throwing_backend final : public securememory::Backend {
 public:
  explicit throwing_backend(std::function<void()> thrower) : thrower_(std::move(thrower)) {}
  [[nodiscard]] std::string_view name() const noexcept override { return "test-throwing"; }
  [[nodiscard]] securememory::Region allocate(std::size_t /*size*/) override {
    thrower_();
    throw std::logic_error("unreachable");
  }
  std::optional<securememory::ViolationKind> protect(securememory::Region& /*r*/, securememory::Access /*a*/) override {
    return std::nullopt;
  }
  void release(securememory::Region& /*r*/) override {}

 private:
  std::function<void()> thrower_;
};

// Registers (once per process) a backend under `name` that throws.
void register_throwing(const std::string& name, const std::function<void()>& thrower) {
  auto& registry = securememory::default_registry();
  const auto names = registry.names();
  if (std::find(names.begin(), names.end(), name) != names.end()) return;
  registry.add(name, [thrower] { return std::make_shared<throwing_backend>(thrower); });
}

int create_random_through_c(const char* backend) {
  securememory_factory* f = nullptr;
  REQUIRE(securememory_factory_new(backend, &f) == SECUREMEMORY_OK);
  securememory_secret* s = nullptr;
  const int rc = securememory_secret_create_random(f, 32, &s);
  CHECK(s == nullptr);
  securememory_factory_free(f);
  return rc;
}

}  // namespace

SM_TEST("C API: a C++ callback that throws gives E_CALLBACK_FAILED, without the exception's text; nothing is held", "[promise][c-api]") {
  securememory_factory* f = nullptr;
  REQUIRE(securememory_factory_new("protectedmemory", &f) == SECUREMEMORY_OK);
  securememory_secret* s = nullptr;
  REQUIRE(securememory_secret_create_random(f, 32, &s) == SECUREMEMORY_OK);

  // with_bytes: any C++ exception from the callback, whatever its type.
  int result = -1;
  CHECK(securememory_secret_with_bytes(
            s, [](const void*, size_t, void*) -> int { throw std::runtime_error("text-of-the-callback"); }, nullptr,
            &result) == SECUREMEMORY_E_CALLBACK_FAILED);
  CHECK(last_message().find("text-of-the-callback") == std::string::npos);
  CHECK(last_message().find("threw") != std::string::npos);
  CHECK(securememory_secret_with_bytes(s, [](const void*, size_t, void*) -> int { throw 42; }, nullptr, &result) ==
        SECUREMEMORY_E_CALLBACK_FAILED);
  // The secret is still open and readable.
  CHECK(securememory_secret_is_closed(s) == 0);
  CHECK(securememory_secret_with_bytes(s, [](const void*, size_t size, void*) { return static_cast<int>(size); },
                                       nullptr, &result) == SECUREMEMORY_OK);
  CHECK(result == 32);

  // create_with: a fill that throws creates nothing.
  const auto before = securememory::metrics();
  securememory_secret* made = nullptr;
  CHECK(securememory_secret_create_with(
            f, 32, [](void*, size_t, void*) -> int { throw std::runtime_error("text-of-the-fill"); }, nullptr, &made) ==
        SECUREMEMORY_E_CALLBACK_FAILED);
  CHECK(made == nullptr);
  CHECK(last_message().find("text-of-the-fill") == std::string::npos);
  CHECK(securememory::metrics().in_use == before.in_use);
  CHECK(securememory::metrics().locked_bytes == before.locked_bytes);

  CHECK(securememory_secret_close(s) == SECUREMEMORY_OK);
  securememory_secret_free(s);
  securememory_factory_free(f);
}

SM_TEST("C API: another exception reaching the boundary (a C++ user backend's) gives E_UNEXPECTED", "[promise][c-api]") {
  register_throwing("test-throws-logic-error", [] { throw std::logic_error("the backend's own bug"); });
  register_throwing("test-throws-int", [] { throw 7; });
  register_throwing("test-throws-bad-alloc", [] { throw std::bad_alloc(); });
  register_throwing("test-throws-error", [] { throw securememory::Error(errc::protection_failed, "refused"); });

  CHECK(create_random_through_c("test-throws-logic-error") == SECUREMEMORY_E_UNEXPECTED);
  CHECK(last_message().find("the backend's own bug") != std::string::npos);
  CHECK(create_random_through_c("test-throws-int") == SECUREMEMORY_E_UNEXPECTED);
  CHECK(last_message().find("unknown type") != std::string::npos);
  // The two that are not unexpected keep their own codes.
  CHECK(create_random_through_c("test-throws-bad-alloc") == SECUREMEMORY_E_OUT_OF_MEMORY);
  CHECK(create_random_through_c("test-throws-error") == SECUREMEMORY_E_PROTECTION_FAILED);
}

namespace {

struct c_violations {
  int calls = 0;
  size_t size = 0;
  std::string backend;
};

void record_c_violation(const securememory_violation* v, void* context) {
  auto* seen = static_cast<c_violations*>(context);
  ++seen->calls;
  seen->size = v->size;
  seen->backend = v->backend;
}

}  // namespace

SM_TEST("C API: securememory_set_violation_handler replaces a handler set through C++, and NULL restores the default", "[promise][c-api][violation]") {
  const test::violation_settings_guard restore;
  int cpp_calls = 0;
  (void)securememory::set_violation_handler([&cpp_calls](const securememory::Violation&) { ++cpp_calls; });
  c_violations seen;
  REQUIRE(securememory_set_violation_handler(record_c_violation, &seen) == SECUREMEMORY_OK);
  securememory::set_violation_policy(securememory::violation_policy::quarantine);

  auto secret = securememory::make_factory("memguard").create_random(24);
  test::corrupt_canary(secret);
  CHECK(test::error_of([&] { secret.verify(); }) == errc::integrity_violation);
  CHECK(seen.calls == 1);
  CHECK(seen.size == 24);
  CHECK(seen.backend == "memguard");
  CHECK(cpp_calls == 0);

  // NULL: the default handler, which logs; neither of the two is called.
  REQUIRE(securememory_set_violation_handler(nullptr, nullptr) == SECUREMEMORY_OK);
  std::vector<std::string> lines;
  const auto previous = securememory::set_log_sink(
      [&lines](securememory::LogLevel, std::string_view message) { lines.emplace_back(message); });
  auto another = securememory::make_factory("memguard").create_random(24);
  test::corrupt_canary(another);
  CHECK(test::error_of([&] { another.verify(); }) == errc::integrity_violation);
  (void)securememory::set_log_sink(previous);
  CHECK(seen.calls == 1);
  CHECK(cpp_calls == 0);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("memguard") != std::string::npos);
}

namespace {

struct c_lines {
  std::vector<std::pair<int, std::string>> lines;
};

void record_c_line(int level, const char* message, size_t length, void* context) {
  static_cast<c_lines*>(context)->lines.emplace_back(level, std::string(message, length));
}

}  // namespace

SM_TEST("C API: securememory_set_log_sink replaces a sink set through C++", "[promise][c-api][log]") {
  std::vector<std::string> cpp_lines;
  const auto previous = securememory::set_log_sink(
      [&cpp_lines](securememory::LogLevel, std::string_view message) { cpp_lines.emplace_back(message); });
  c_lines seen;
  REQUIRE(securememory_set_log_sink(record_c_line, &seen) == SECUREMEMORY_OK);
  securememory::detail::log_error("a message for the C sink");
  securememory::detail::log_warning("a warning for the C sink");
  CHECK(cpp_lines.empty());
  REQUIRE(seen.lines.size() == 2);
  CHECK(seen.lines[0].first == SECUREMEMORY_LOG_ERROR);
  CHECK(seen.lines[0].second == "a message for the C sink");
  CHECK(seen.lines[1].first == SECUREMEMORY_LOG_WARN);
  // The C++ API sees the C sink as the one in force, and replaces it in turn.
  auto c_sink = securememory::set_log_sink(
      [&cpp_lines](securememory::LogLevel, std::string_view message) { cpp_lines.emplace_back(message); });
  CHECK(static_cast<bool>(c_sink));
  securememory::detail::log_error("after");
  CHECK(seen.lines.size() == 2);
  CHECK(cpp_lines.size() == 1);
  (void)securememory::set_log_sink(previous);
}
