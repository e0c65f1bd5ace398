// securememory: the "protectedmemory" backend (see the layout in the header).
//
// Theory of operation: allocate = mmap + mlock + madvise(DONTDUMP) +
// madvise(WIPEONFORK); every step that fails undoes the ones before it and
// throws, so a failed allocation holds nothing. release = mprotect(RW) +
// sodium_memzero + munlock + munmap; it goes on past a failing step so that
// as much as possible is given back, then throws the first failure. All
// system calls go through lib/os/.
#include "backends/protectedmemory.hpp"

#include "internal.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <cerrno>
#include <sys/mman.h>

namespace securememory::detail {
namespace {

class protectedmemory final : public backend {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "protectedmemory"; }

  [[nodiscard]] region allocate(std::size_t size) override {
    const std::size_t length = round_to_pages(size);
    void* base = os::map_anonymous(length);
    if (base == nullptr) {
      const int err = errno;
      throw_os_error(errc::out_of_memory, "cannot map memory for a secret", "mmap", err,
                     "free memory or raise the address-space limit (RLIMIT_AS, vm.max_map_count)");
    }
    if (os::lock(base, length) != 0) {
      const int err = errno;
      os::unmap(base, length);  // nothing was locked; unmapping untouched pages cannot leak a secret
      throw_os_error(errc::memlock_limit, fmt::format("cannot lock {} bytes for a secret", length).c_str(), "mlock",
                     err, memlock_hint());
    }
    advise_or_undo(base, length, MADV_DONTDUMP, "MADV_DONTDUMP");
    advise_or_undo(base, length, MADV_WIPEONFORK, "MADV_WIPEONFORK");
    region r;
    r.base = base;
    r.data = static_cast<std::byte*>(base);
    r.size = size;
    r.mapped = length;
    r.locked = length;
    return r;
  }

  void protect(region& r, access a) override { protect_pages(r.base, r.mapped, a); }

  void release(region& r) override {
    int wipe_err = 0;
    if (os::protect(r.base, r.mapped, PROT_READ | PROT_WRITE) == 0) {
      sodium_memzero(r.base, r.mapped);
    } else {
      wipe_err = errno;  // cannot write the pages, so cannot wipe them; still give them back
    }
    const int unlock_err = os::unlock(r.base, r.mapped) == 0 ? 0 : errno;
    const int unmap_err = os::unmap(r.base, r.mapped) == 0 ? 0 : errno;
    r = region{};
    if (wipe_err != 0) {
      throw_os_error(errc::protection_failed, "secret could NOT be wiped before release", "mprotect", wipe_err,
                     "the pages were unlocked and unmapped anyway");
    }
    if (unlock_err != 0) throw_os_error(errc::release_failed, "secret wiped, but unlocking failed", "munlock", unlock_err);
    if (unmap_err != 0) throw_os_error(errc::release_failed, "secret wiped, but unmapping failed", "munmap", unmap_err);
  }

 private:
  static void advise_or_undo(void* base, std::size_t length, int advice, const char* advice_name) {
    if (os::advise(base, length, advice) == 0) return;
    const int err = errno;
    os::unlock(base, length);
    os::unmap(base, length);
    throw_os_error(errc::protection_failed, fmt::format("cannot apply {} to a secret's memory", advice_name).c_str(),
                   "madvise", err, "this kernel may be too old (Linux 4.14+ is required)");
  }
};

}  // namespace

std::shared_ptr<backend> make_protectedmemory() {
  static const std::shared_ptr<backend>* instance = new std::shared_ptr<backend>(std::make_shared<protectedmemory>());
  return *instance;
}

}  // namespace securememory::detail
