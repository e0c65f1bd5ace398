// Prints what the library read from its environment variables, for
// test/env-check.py: the page cache's bound, then the bound again after
// SECUREMEMORY_PAGE_CACHE is changed (the variable is read once: the bound
// must not change), then what make_factory() says about SECUREMEMORY_BACKEND.
#include <securememory/securememory.hpp>

#include <cstdio>
#include <cstdlib>

int main() {
  std::printf("limit %zu\n", securememory::page_cache_limit());
  setenv("SECUREMEMORY_PAGE_CACHE", "0", 1);
  std::printf("again %zu\n", securememory::page_cache_limit());
  try {
    std::printf("backend %s\n", std::string(securememory::make_factory().backend()).c_str());
  } catch (const securememory::error& e) {
    std::printf("error %d %s\n", e.code().value(), e.what());
  }
  return 0;
}
