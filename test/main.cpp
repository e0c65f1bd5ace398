// Catch2 main for every test binary, plus a TAP reporter with one line per
// test case ("tap-cases"): `meson test` (protocol: 'tap') then counts test
// cases, not assertions. Failed assertions are printed as TAP comments.
#define CATCH_CONFIG_MAIN
// GCC 12 with -O2 and -fsanitize=address reports a false -Wmaybe-uninitialized
// inside libstdc++'s <regex> (std::function moves in _NFA::_M_insert_subexpr_*),
// which Catch2's main pulls in; with -Dwerror=true that breaks the ASan build.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <catch2/catch.hpp>
#pragma GCC diagnostic pop

#include <ostream>

namespace {

struct tap_cases_reporter : Catch::StreamingReporterBase<tap_cases_reporter> {
  using StreamingReporterBase::StreamingReporterBase;

  static std::string getDescription() { return "TAP, one line per test case"; }

  void assertionStarting(Catch::AssertionInfo const&) override {}

  bool assertionEnded(Catch::AssertionStats const& stats) override {
    const auto& result = stats.assertionResult;
    // WARN("skipped: <reason>") or WARN("SKIP: <reason>") marks the test case
    // skipped (TAP "# SKIP"), so `meson test` and .ci/count-results.py count it
    // as skipped, visibly; every WARN is also printed as a TAP comment.
    if (result.getResultType() == Catch::ResultWas::Warning) {
      const std::string message = one_line(result.getMessage());
      stream << "# WARN at " << result.getSourceInfo() << ": " << message << '\n';
      const bool is_skip = message.rfind("skipped", 0) == 0 || message.rfind("SKIP", 0) == 0;
      if (is_skip && skip_reason_.empty()) skip_reason_ = message;
      return true;
    }
    if (result.isOk()) return true;
    stream << "# FAILED at " << result.getSourceInfo() << ": " << result.getExpressionInMacro();
    if (result.hasExpandedExpression()) stream << " with expansion " << one_line(result.getExpandedExpression());
    if (result.hasMessage()) stream << " : " << one_line(result.getMessage());
    for (const auto& info : stats.infoMessages) stream << " [" << one_line(info.message) << "]";
    stream << '\n';
    return true;
  }

  // TAP comments are one line each.
  static std::string one_line(std::string s) {
    for (auto& c : s) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    return s;
  }

  void testCaseEnded(Catch::TestCaseStats const& stats) override {
    ++count_;
    const bool ok = stats.totals.assertions.failed == 0 && !stats.aborting;
    stream << (ok ? "ok " : "not ok ") << count_ << " - " << stats.testInfo.name;
    if (ok && !skip_reason_.empty()) stream << " # SKIP " << skip_reason_;
    stream << '\n' << std::flush;
    skip_reason_.clear();
    StreamingReporterBase::testCaseEnded(stats);
  }

  void testRunEnded(Catch::TestRunStats const& stats) override {
    stream << "1.." << count_ << '\n' << std::flush;
    StreamingReporterBase::testRunEnded(stats);
  }

 private:
  int count_ = 0;
  std::string skip_reason_;
};

}  // namespace

CATCH_REGISTER_REPORTER("tap-cases", tap_cases_reporter)
