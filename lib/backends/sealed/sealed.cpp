// securememory: the "sealed" backend (see the layout in ../sealed.hpp).
//
// Theory of operation. A secret at rest is ciphertext in a slot
// (slots.hpp); its plaintext exists only in a locked, dump-excluded scratch
// chunk (scratch.hpp) while the state machine has it open; the key and
// cipher are key.hpp's. The state machine's calls map to:
//
//   allocate(n)          scratch chunk first (a request that cannot be
//                        locked fails here, before anything is touched),
//                        then a slot; data = chunk
//   protect(none)        after the fill (current read_write): seal the chunk
//                        into the slot; in every case wipe the chunk and
//                        give it back; data = nullptr
//   protect(read)        take a chunk, open the slot into it; data = chunk.
//                        A slot that fails authentication leaves nothing
//                        open (current stays none) and is reported as
//                        ViolationKind::authentication_failed
//   release()            wipe the chunk (if open) and the slot; free the slot
//   quarantine()         wipe both; the slot is never reused
//
// The scratch and the slots are process-wide allocators (one each, never
// destroyed). Each sealed backend object has its own key, made in the key
// backend it was handed (ARCHITECTURE: composites are assembled where the
// built-ins are registered; nothing here looks a backend up by name). All
// system calls go through lib/os/ (locked_pages.hpp).
#include "backends/sealed.hpp"

#include "backends/sealed/key.hpp"
#include "backends/sealed/memory.hpp"
#include "backends/sealed/scratch.hpp"
#include "backends/sealed/slots.hpp"
#include "internal.hpp"
#include "metrics.hpp"
#include "locked_pages.hpp"
#include "os/os.hpp"
#include "page_cache.hpp"

#include <securememory/error.hpp>
#include <securememory/secret.hpp>

#include <algorithm>
#include <mutex>
#include <new>
#include <pthread.h>
#include <vector>

namespace securememory::detail {
namespace {

using sealed_parts::scratch;
using sealed_parts::sealing_key;
using sealed_parts::slot_arena;
using sealed_parts::slot_overhead;
using sealed_parts::the_scratch;
using sealed_parts::the_slots;


std::size_t slot_size_for(std::size_t n) noexcept {
  return (n + slot_overhead + slot_arena::align - 1) & ~(slot_arena::align - 1);
}

// --- fork: every lock of the sealed parts is held across it --------------------------

struct key_list {
  small_mutex mutex;
  std::vector<sealing_key*> keys;
};

key_list& keys() {
  static auto* k = new key_list();  // never destroyed
  return *k;
}

void before_fork() noexcept {
  keys().mutex.lock();
  for (sealing_key* k : keys().keys) k->lock_for_fork();
  the_slots().lock_for_fork();
  the_scratch().lock_for_fork();
}

void after_fork_parent() noexcept {
  the_scratch().unlock_after_fork();
  the_slots().unlock_after_fork();
  for (sealing_key* k : keys().keys) k->unlock_after_fork();
  keys().mutex.unlock();
}

void after_fork_child() noexcept {
  // Where the platform drops the scratch from the child (macOS) it is
  // reserved anew when first needed; elsewhere its pages are here, zero.
  the_scratch().reset_in_child(os::fork_hiding() != os::fork_rule::drop);
  for (sealing_key* k : keys().keys) k->reset_in_child();
  after_fork_parent();
}

// The page cache's idle-holder hook: every key nobody uses, and every
// scratch slab no access uses.
std::size_t release_idle_memory() noexcept {
  std::size_t freed = the_scratch().release_idle();
  std::vector<sealing_key*> snapshot;
  {
    const std::lock_guard lock(keys().mutex);
    try {
      snapshot = keys().keys;
    } catch (...) {
      return freed;  // no memory for the snapshot: keep the keys this time
    }
  }
  for (sealing_key* k : snapshot) freed += k->release_if_idle();
  return freed;
}

// From a signal handler (purge_on_signals): every key and the scratch.
void wipe_in_signal_handler() noexcept {
  for (sealing_key* k : keys().keys) k->wipe_in_signal_handler();
  the_scratch().wipe_in_signal_handler();
}

// The parts are shared: registered once, however many sealed backends exist.
void register_process_hooks() {
  static const bool done = [] {
    (void)the_scratch();
    (void)the_slots();
    (void)keys();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    page_cache::add_idle_holder(release_idle_memory);
    add_internal_locked_source("sealed", sealed_locked_bytes);
    add_emergency_hook(wipe_in_signal_handler);
    return true;
  }();
  (void)done;
}

class sealed;

// The first sealed backend made (the default registry's), for the test
// accessors at the end of this file.
std::atomic<const sealed*> first_instance{nullptr};

class sealed final : public backend {
 public:
  explicit sealed(sealed_parts::key_backend_source source)
      : key_(std::move(source), sealed_parts::preferred_cipher()) {
    register_process_hooks();
    const std::lock_guard lock(keys().mutex);
    keys().keys.push_back(&key_);
  }
  sealed(const sealed&) = delete;
  sealed& operator=(const sealed&) = delete;
  ~sealed() override {
    const sealed* self = this;
    first_instance.compare_exchange_strong(self, nullptr);
    (void)key_.release_if_idle();  // no secret of this backend is left: nothing uses its key
    const std::lock_guard lock(keys().mutex);
    std::erase(keys().keys, &key_);
  }

  [[nodiscard]] std::string_view name() const noexcept override { return "sealed"; }

  [[nodiscard]] region allocate(std::size_t size) override {
    if (size == 0) throw error(errc::invalid_size, "secret size must be at least 1 byte");
    if (size > max_secret_size) {
      throw error(errc::invalid_size, fmt::format("a secret of {} bytes is larger than max_secret_size", size));
    }
    key_.acquire();  // made on first use (may throw memlock_limit)
    const std::size_t slot_size = slot_size_for(size);
    std::byte* plain = nullptr;
    std::byte* slot = nullptr;
    try {
      plain = the_scratch().take(size);  // first: what cannot be locked fails before anything is touched
      slot = the_slots().take(slot_size);
    } catch (...) {
      if (plain != nullptr) the_scratch().give(plain, size);
      key_.release();
      throw;
    }
    region r;
    r.data = plain;
    r.size = size;
    r.base = slot;
    r.mapped = slot_size;
    r.locked = 0;  // nothing locked per secret: the scratch is shared and bounded
    r.current = access::read_write;
    return r;
  }

  [[nodiscard]] BackendDescription describe() const noexcept override {
    BackendDescription d;
    d.provides.locked = true;  // plaintext only in locked scratch, key in a locked region
    // Likewise (the ciphertext may be in a dump), where the platform can
    // exclude pages (lib/os/): the scratch's, and the key backend's.
    d.provides.excluded_from_core_dumps = os::can_exclude_from_core_dumps();
    d.provides.encrypted_at_rest = true;
    d.provides.tamper_detected = true;
    // The child has neither the plaintext nor the key, where the platform
    // hides pages from forked children.
    d.provides.hidden_from_fork_children = os::fork_hiding() != os::fork_rule::none;
    d.provides.wiped_on_release = true;
    d.checks_integrity = true;
    d.locks_per_secret = false;
    if (const std::shared_ptr<Backend> holder = key_.backend_for_description()) {
      d.key_backend = holder->name();
      const Guarantees key = holder->describe().provides;
      d.provides.key_outside_direct_map = key.outside_direct_map;
      d.provides.excluded_from_core_dumps = d.provides.excluded_from_core_dumps && key.excluded_from_core_dumps;
      d.provides.hidden_from_fork_children = d.provides.hidden_from_fork_children && key.hidden_from_fork_children;
    }
    return d;
  }

  std::optional<ViolationKind> protect(region& r, access a) override {
    if (a == r.current) return std::nullopt;
    if (a == access::none) {
      if (r.current == access::read_write) key_.seal(static_cast<std::byte*>(r.base), r.data, r.size);
      close_scratch(r);
      return std::nullopt;
    }
    if (r.current == access::none && !open(r)) return ViolationKind::authentication_failed;  // stays closed
    r.current = a;
    return std::nullopt;
  }

  void release(region& r) override { give_back(r, true); }

  void quarantine(region& r) noexcept override { give_back(r, false); }

  void release_after_fork(region& r) noexcept override {
    // The parent's ciphertext is useless here (its key is not inherited):
    // wipe it and reuse the slot. A scratch chunk the parent had open is
    // zero here (wiped at fork) and free again (reset_in_child). Users of
    // the key were reset at fork: nothing to count.
    if (r.base != nullptr) the_slots().give(static_cast<std::byte*>(r.base), r.mapped, true, true);
    r = region{};
  }

  [[nodiscard]] const sealing_key& key() const noexcept { return key_; }

 private:
  // Decrypts the slot into a scratch chunk; false (nothing open) when it
  // fails authentication.
  bool open(region& r) {
    std::byte* plain = the_scratch().take(r.size);
    if (!key_.open(static_cast<const std::byte*>(r.base), plain, r.size)) {
      the_scratch().give(plain, r.size);
      r.data = nullptr;
      return false;
    }
    r.data = plain;
    r.current = access::read;
    return true;
  }

  // Wipes the scratch (if open) and the slot; the slot is reused unless
  // quarantined. A slot never sealed into (the fill threw) holds nothing.
  void give_back(region& r, bool reuse) noexcept {
    const bool written = r.current != access::read_write;
    close_scratch(r);
    if (r.base != nullptr) {
      the_slots().give(static_cast<std::byte*>(r.base), r.mapped, written, reuse);
      key_.release();
    }
    if (reuse) {
      r = region{};
    } else {
      r.base = nullptr;
      r.current = access::none;
    }
  }

  static void close_scratch(region& r) noexcept {
    if (r.data != nullptr) the_scratch().give(r.data, r.size);
    r.data = nullptr;
    r.current = access::none;
  }

  sealing_key key_;
};

}  // namespace

std::shared_ptr<backend> make_sealed(sealed_parts::key_backend_source key_backend) {
  ensure_initialised();
  auto made = std::make_shared<sealed>(std::move(key_backend));
  const sealed* expected = nullptr;
  first_instance.compare_exchange_strong(expected, made.get());
  return made;
}

sealed_usage sealed_stats() noexcept {
  const sealed_parts::slot_usage s = the_slots().usage();
  sealed_usage u;
  u.live_slots = s.live_slots;
  u.slot_bytes = s.slot_bytes;
  u.arena_bytes = s.arena_bytes;
  u.scratch_slabs = the_scratch().slabs_locked();
  u.scratch_slab_count = the_scratch().slab_count();
  return u;
}

std::size_t sealed_locked_bytes() noexcept {
  std::size_t total = the_scratch().locked_bytes();
  const std::lock_guard lock(keys().mutex);
  for (const sealing_key* k : keys().keys) total += k->locked_bytes();
  return total;
}

std::span<std::byte> sealed_ciphertext_of(const region& r) noexcept {
  if (r.base == nullptr) return {};
  return {static_cast<std::byte*>(r.base) + 8, r.size + 16};
}

std::span<const std::byte> sealed_key_for_tests() noexcept {
  const sealed* s = first_instance.load();
  return s != nullptr ? s->key().bytes_for_tests() : std::span<const std::byte>{};
}

bool is_sealed(const backend& b) noexcept { return dynamic_cast<const sealed*>(&b) != nullptr; }

std::span<const std::byte> key_bytes_of(const backend& b) noexcept {
  const auto* s = dynamic_cast<const sealed*>(&b);
  return s != nullptr ? s->key().bytes_for_tests() : std::span<const std::byte>{};
}

std::string_view sealed_cipher(const backend& b) noexcept {
  const auto* s = dynamic_cast<const sealed*>(&b);
  return s != nullptr ? sealed_parts::cipher_name(s->key().kind()) : std::string_view{};
}

std::string_view sealed_key_backend(const backend& b) noexcept {
  const auto* s = dynamic_cast<const sealed*>(&b);
  return s != nullptr ? s->key().backend_name() : std::string_view{};
}

}  // namespace securememory::detail
