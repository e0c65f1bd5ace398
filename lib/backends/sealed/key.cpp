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
#include "backends/sealed/key.hpp"

#include "internal.hpp"
#include "scrub.hpp"

#include <securememory/page_cache.hpp>

#include <sodium.h>

#include <array>
#include <cstring>
#include <mutex>

namespace securememory::detail::sealed_parts {
namespace {

constexpr std::size_t key_bytes = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;
constexpr std::size_t tag_bytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
constexpr std::size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::size_t counter_bytes = sizeof(std::uint64_t);
static_assert(slot_overhead == counter_bytes + tag_bytes);

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
  region r = b->allocate(key_bytes);
  try {
    crypto_aead_xchacha20poly1305_ietf_keygen(reinterpret_cast<unsigned char*>(r.data));
    b->protect(r, access::read);
  } catch (...) {
    release_region(*b, r);
    throw;
  }
  std::shared_ptr<backend> old_backend;
  region old_region{};
  bool lost = false;
  {
    const std::lock_guard lock(mutex_);
    if (generation_.load(std::memory_order_relaxed) == want) {
      lost = true;  // another thread made it meanwhile
    } else {
      old_backend = std::move(backend_);
      old_region = region_;
      randombytes_buf(prefix_.data(), prefix_.size());
      backend_ = std::move(b);
      region_ = r;
      generation_.store(want, std::memory_order_seq_cst);
    }
  }
  if (lost) {
    release_region(*b, r);
    return;
  }
  // A parent's key region, in a forked child: wiped or not mapped here.
  if (old_backend && old_region.data != nullptr) old_backend->release_after_fork(old_region);
}

void sealing_key::seal(std::byte* slot, const std::byte* plain, std::size_t n) noexcept {
  auto* out = reinterpret_cast<unsigned char*>(slot);
  const std::uint64_t counter = counter_.fetch_add(1, std::memory_order_relaxed);
  std::memcpy(out, &counter, counter_bytes);
  std::array<unsigned char, nonce_bytes> nonce{};
  std::memcpy(nonce.data(), prefix_.data(), prefix_.size());
  std::memcpy(nonce.data() + prefix_.size(), &counter, counter_bytes);
  const auto ad = additional_data(slot, n);
  unsigned char* ciphertext = out + counter_bytes;
  crypto_aead_xchacha20poly1305_ietf_encrypt_detached(ciphertext, ciphertext + n, nullptr,
                                                      reinterpret_cast<const unsigned char*>(plain), n, ad.data(),
                                                      ad.size(), nullptr, nonce.data(),
                                                      reinterpret_cast<const unsigned char*>(region_.data));
  scrub_after_cipher();
}

bool sealing_key::open(const std::byte* slot, std::byte* plain, std::size_t n) noexcept {
  const auto* in = reinterpret_cast<const unsigned char*>(slot);
  std::array<unsigned char, nonce_bytes> nonce{};
  std::memcpy(nonce.data(), prefix_.data(), prefix_.size());
  std::memcpy(nonce.data() + prefix_.size(), in, counter_bytes);
  const auto ad = additional_data(slot, n);
  const unsigned char* ciphertext = in + counter_bytes;
  const int status = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
      reinterpret_cast<unsigned char*>(plain), nullptr, ciphertext, n, ciphertext + n, ad.data(), ad.size(),
      nonce.data(), reinterpret_cast<const unsigned char*>(region_.data));
  scrub_after_cipher();
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
  return {region_.data, key_bytes};
}

}  // namespace securememory::detail::sealed_parts
