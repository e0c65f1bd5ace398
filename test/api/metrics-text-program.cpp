// Prints metrics_text() for test/api/metrics-text-check.py, after secrets
// of every backend were created (some closed into the page cache) and a
// user backend with an awkward name was used; then the totals of metrics()
// on a last line, "# totals in_use locked cached internal".
#include <securememory/securememory.hpp>

#include "../heap-region.hpp"

#include <cstdio>
#include <vector>

namespace {

// Plain heap memory, guarantees nothing: only its name matters here.
class odd_backend final : public securememory::Backend {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "odd\"name\\with\nnewline"; }
  [[nodiscard]] securememory::Region allocate(std::size_t size) override { return test::heap_region(size); }
  std::optional<securememory::ViolationKind> protect(securememory::Region& r, securememory::Access a) override {
    r.current = a;
    return std::nullopt;
  }
  void release(securememory::Region& r) override { test::release_heap_region(r); }
};

}  // namespace

int main() {
  securememory::set_page_cache_limit(std::size_t{1} << 20U);
  std::vector<securememory::Secret> held;
  for (const auto& name : securememory::backend_names()) {
    if (!securememory::backend_available(name)) continue;
    auto factory = securememory::make_factory(name);
    for (int i = 0; i < 3; ++i) held.push_back(factory.create_random(100));
    factory.create_random(4096).close();
  }
  securememory::SecretFactory odd(std::make_shared<odd_backend>());
  held.push_back(odd.create_random(10));
  std::fputs(securememory::metrics_text().c_str(), stdout);
  const auto m = securememory::metrics();
  std::printf("# totals %llu %llu %llu %llu\n", static_cast<unsigned long long>(m.in_use),
              static_cast<unsigned long long>(m.locked_bytes), static_cast<unsigned long long>(m.cached_bytes),
              static_cast<unsigned long long>(m.internal_locked_bytes));
  return 0;
}
