// securememory: sealed's key and cipher (see key.hpp).
//
// Theory of operation. users_ counts the sealed regions of this process;
// the key may be dropped only when it is 0. A user increments users_ and
// then reads generation_; a drop stores 0 in generation_ and then reads
// users_ (all sequentially consistent): either the user sees no key and
// makes one under the mutex (after the drop), or the drop sees the user
// and puts the key back. So a key in use is never dropped, without a lock
// on the path of every access.
//
// The key region is made and filled before the mutex is taken, and a
// region it replaces (a parent's, in a forked child) or drops is given back
// after the mutex is released: the mutex is never held while another
// backend's locks are taken.
//
// Nonce counters: each thread keeps a block of counter_block values taken
// from the key's counter_ with one fetch_add, bound to the key's id_ (a
// process-wide number, new for every key made), and uses them one by one.
// Blocks are disjoint and counter_ never goes back while the object lives,
// so a counter value is used at most once under a key; a thread's block of
// another key (another sealed backend, a key dropped and made again, or the
// parent's key in a forked child) is never used with this one.
#include "backends/sealed/key.hpp"

#include "internal.hpp"
#include "os/os.hpp"
#include "random.hpp"
#include "scrub.hpp"

#include <securememory/page_cache.hpp>

#include <sodium.h>

#include <array>
#include <cstring>
#include <mutex>
#include <sys/mman.h>

namespace securememory::detail::sealed_parts {
namespace {

constexpr std::size_t key_bytes = crypto_aead_aes256gcm_KEYBYTES;
constexpr std::size_t tag_bytes = crypto_aead_aes256gcm_ABYTES;
constexpr std::size_t nonce_bytes = crypto_aead_aes256gcm_NPUBBYTES;
constexpr std::size_t counter_bytes = sizeof(std::uint64_t);
constexpr std::size_t prefix_bytes = nonce_bytes - counter_bytes;
constexpr std::size_t state_align = 16;
static_assert(key_bytes == crypto_aead_chacha20poly1305_ietf_KEYBYTES);
static_assert(tag_bytes == crypto_aead_chacha20poly1305_ietf_ABYTES);
static_assert(nonce_bytes == crypto_aead_chacha20poly1305_ietf_NPUBBYTES);
static_assert(prefix_bytes == 4);
static_assert(slot_overhead == counter_bytes + tag_bytes);
static_assert(alignof(crypto_aead_aes256gcm_state) <= state_align);

// The key's region: the key, padding to 16 and libsodium's 512-byte AES-GCM
// state; 560 bytes, a multiple of 16, so memguard's right-aligned block
// starts 16-byte aligned too.
constexpr std::size_t region_bytes = key_bytes + state_align + sizeof(crypto_aead_aes256gcm_state);

// Nonce counters a thread takes from a key at once.
constexpr std::uint64_t counter_block = 1024;

struct counter_cache {
  std::uint64_t id = 0;  // the key the block belongs to (0: none)
  std::uint64_t next = 0;
  std::uint64_t end = 0;
};
constinit thread_local counter_cache thread_counters;
constinit std::atomic<std::uint64_t> next_key_id{1};

// The AES-GCM state's place in a key region: 16-byte aligned after the key.
unsigned char* state_in(std::byte* data) noexcept {
  auto* after_key = reinterpret_cast<unsigned char*>(data) + key_bytes;
  const std::size_t misaligned = reinterpret_cast<std::uintptr_t>(after_key) & (state_align - 1);
  return misaligned == 0 ? after_key : after_key + (state_align - misaligned);
}

std::uint64_t current_generation() noexcept { return fork_generation() + 1; }

void release_region(backend& b, region& r) noexcept {
  try {
    b.release(r);
  } catch (const std::exception& e) {
    log_error(std::string("releasing a sealing-key region failed: ") + e.what());
  }
}

// Associated data: the slot's address and the secret's size.
std::array<unsigned char, 16> additional_data(const std::byte* slot, std::size_t n) noexcept {
  std::array<unsigned char, 16> ad{};
  const auto where = reinterpret_cast<std::uint64_t>(slot);
  const std::uint64_t size = n;
  std::memcpy(ad.data(), &where, 8);
  std::memcpy(ad.data() + 8, &size, 8);
  return ad;
}

}  // namespace

cipher preferred_cipher() noexcept {
  return crypto_aead_aes256gcm_is_available() != 0 ? cipher::aes256gcm : cipher::chacha20poly1305;
}

const char* cipher_name(cipher c) noexcept {
  return c == cipher::aes256gcm ? "AES-256-GCM" : "ChaCha20-Poly1305";
}

std::size_t key_region_bytes() noexcept { return region_bytes; }

void sealing_key::acquire() {
  users_.fetch_add(1, std::memory_order_seq_cst);
  const std::uint64_t want = current_generation();
  if (generation_.load(std::memory_order_seq_cst) == want) return;
  try {
    make(want);
  } catch (...) {
    users_.fetch_sub(1, std::memory_order_seq_cst);
    throw;
  }
}

void sealing_key::release() noexcept {
  if (users_.fetch_sub(1, std::memory_order_seq_cst) != 1) return;
  if (page_cache_limit() == 0) (void)release_if_idle();
}

std::size_t sealing_key::release_if_idle() noexcept {
  std::shared_ptr<backend> dropped_backend;
  region dropped{};
  {
    const std::lock_guard lock(mutex_);
    const std::uint64_t generation = generation_.load(std::memory_order_relaxed);
    if (generation != current_generation()) return 0;  // none here (or only a parent's)
    generation_.store(0, std::memory_order_seq_cst);
    if (users_.load(std::memory_order_seq_cst) != 0) {
      generation_.store(generation, std::memory_order_seq_cst);  // a user came in: keep it
      return 0;
    }
    dropped_backend = std::move(backend_);
    dropped = region_;
    region_ = region{};
  }
  const std::size_t freed = dropped.locked;
  release_region(*dropped_backend, dropped);
  return freed;
}

void sealing_key::make(std::uint64_t want) {
  std::shared_ptr<backend> b = source_();
  region r = b->allocate(key_region_bytes());
  std::array<unsigned char, prefix_bytes> prefix{};
  try {
    csprng::fill(r.data, key_bytes);  // throws only on the generator's first use here
    if (cipher_ == cipher::aes256gcm) {
      // At most 15 bytes of padding: the state ends inside key_region_bytes().
      crypto_aead_aes256gcm_beforenm(reinterpret_cast<crypto_aead_aes256gcm_state*>(state_in(r.data)),
                                     reinterpret_cast<const unsigned char*>(r.data));
    }
    scrub_after_cipher();  // the key schedule's registers and stack
    csprng::fill(reinterpret_cast<std::byte*>(prefix.data()), prefix.size());
    b->protect(r, access::read);
  } catch (...) {
    release_region(*b, r);
    throw;
  }
  std::shared_ptr<backend> old_backend;
  region old_region{};
  std::shared_ptr<backend> lost;
  {
    const std::lock_guard lock(mutex_);
    if (generation_.load(std::memory_order_relaxed) == want) {
      lost = std::move(b);  // another thread made it meanwhile
    } else {
      old_backend = std::move(backend_);
      old_region = region_;
      prefix_ = prefix;
      id_.store(next_key_id.fetch_add(1, std::memory_order_relaxed), std::memory_order_relaxed);
      backend_ = std::move(b);
      region_ = r;
      generation_.store(want, std::memory_order_seq_cst);
    }
  }
  if (lost) {
    release_region(*lost, r);
    return;
  }
  // A parent's key region, in a forked child: wiped or not mapped here.
  if (old_backend && old_region.data != nullptr) old_backend->release_after_fork(old_region);
}

std::uint64_t sealing_key::next_counter() noexcept {
  counter_cache& c = thread_counters;
  const std::uint64_t id = id_.load(std::memory_order_relaxed);
  if (c.id != id || c.next == c.end) {
    c.next = counter_.fetch_add(counter_block, std::memory_order_relaxed);
    c.end = c.next + counter_block;
    c.id = id;
  }
  return c.next++;
}

const unsigned char* sealing_key::key_data() const noexcept { return reinterpret_cast<const unsigned char*>(region_.data); }

const void* sealing_key::aes_state() const noexcept { return state_in(region_.data); }

void sealing_key::seal(std::byte* slot, const std::byte* plain, std::size_t n) noexcept {
  auto* out = reinterpret_cast<unsigned char*>(slot);
  const std::uint64_t counter = next_counter();
  std::memcpy(out, &counter, counter_bytes);
  std::array<unsigned char, nonce_bytes> nonce{};
  std::memcpy(nonce.data(), prefix_.data(), prefix_bytes);
  std::memcpy(nonce.data() + prefix_bytes, &counter, counter_bytes);
  const auto ad = additional_data(slot, n);
  unsigned char* ciphertext = out + counter_bytes;
  const auto* m = reinterpret_cast<const unsigned char*>(plain);
  if (cipher_ == cipher::aes256gcm) {
    crypto_aead_aes256gcm_encrypt_detached_afternm(ciphertext, ciphertext + n, nullptr, m, n, ad.data(), ad.size(),
                                                   nullptr, nonce.data(),
                                                   static_cast<const crypto_aead_aes256gcm_state*>(aes_state()));
    scrub_after_aes();
  } else {
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(ciphertext, ciphertext + n, nullptr, m, n, ad.data(), ad.size(),
                                                       nullptr, nonce.data(), key_data());
    scrub_after_cipher();
  }
}

bool sealing_key::open(const std::byte* slot, std::byte* plain, std::size_t n) noexcept {
  const auto* in = reinterpret_cast<const unsigned char*>(slot);
  std::array<unsigned char, nonce_bytes> nonce{};
  std::memcpy(nonce.data(), prefix_.data(), prefix_bytes);
  std::memcpy(nonce.data() + prefix_bytes, in, counter_bytes);
  const auto ad = additional_data(slot, n);
  const unsigned char* ciphertext = in + counter_bytes;
  auto* m = reinterpret_cast<unsigned char*>(plain);
  int status = 0;
  if (cipher_ == cipher::aes256gcm) {
    status = crypto_aead_aes256gcm_decrypt_detached_afternm(m, nullptr, ciphertext, n, ciphertext + n, ad.data(),
                                                            ad.size(), nonce.data(),
                                                            static_cast<const crypto_aead_aes256gcm_state*>(aes_state()));
    scrub_after_aes();
  } else {
    status = crypto_aead_chacha20poly1305_ietf_decrypt_detached(m, nullptr, ciphertext, n, ciphertext + n, ad.data(),
                                                                ad.size(), nonce.data(), key_data());
    scrub_after_cipher();
  }
  return status == 0;
}

std::size_t sealing_key::locked_bytes() const noexcept {
  const std::lock_guard lock(mutex_);
  return generation_.load(std::memory_order_relaxed) == current_generation() ? region_.locked : 0;
}

std::string_view sealing_key::backend_name() const noexcept {
  const std::lock_guard lock(mutex_);
  // A backend object lives as long as the process (built-ins) or as long as
  // its maker keeps it: the name outlives this call.
  return generation_.load(std::memory_order_relaxed) == current_generation() && backend_ ? backend_->name()
                                                                                         : std::string_view{};
}

void sealing_key::wipe_in_signal_handler() noexcept {
  if (generation_.load(std::memory_order_acquire) != current_generation()) return;
  auto* key = reinterpret_cast<std::byte* volatile&>(region_.data);  // NOLINT(*-reinterpret-cast): racy read, from a signal handler
  if (key == nullptr) return;
  // The whole region: the key and, for AES-GCM, its expanded schedule.
  const std::size_t page = os::page_size();
  const auto first = reinterpret_cast<std::uintptr_t>(key) / page * page;
  const auto end = (reinterpret_cast<std::uintptr_t>(key) + region_bytes + page - 1) / page * page;
  if (os::protect(reinterpret_cast<void*>(first), end - first, PROT_READ | PROT_WRITE) != 0) return;  // NOLINT(performance-no-int-to-ptr)
  sodium_memzero(key, region_bytes);
}

std::shared_ptr<Backend> sealing_key::backend_for_description() const noexcept {
  {
    const std::lock_guard lock(mutex_);
    if (generation_.load(std::memory_order_relaxed) == current_generation() && backend_) return backend_;
  }
  try {
    return source_();
  } catch (...) {
    return nullptr;  // no key backend on this host: the key cannot be made
  }
}

std::span<const std::byte> sealing_key::bytes_for_tests() const noexcept {
  if (generation_.load(std::memory_order_acquire) != current_generation()) return {};
  return {region_.data, key_bytes};  // the AES-GCM state after it holds it too (its first two round keys)
}

}  // namespace securememory::detail::sealed_parts
