// securememory internal: a 4-byte mutex for per-secret state.
//
// Theory of operation: the classic three-state futex mutex (0 free,
// 1 locked, 2 locked with waiters), built on C++20 std::atomic wait/notify
// (a futex on Linux). std::mutex plus std::condition_variable cost 88 bytes
// per secret; this costs 4, which matters when a process holds 100,000
// secrets. It spins briefly before sleeping, since the critical sections it
// guards are short (one mprotect at most).
#pragma once

#include <atomic>
#include <cstdint>

namespace securememory::detail {

class small_mutex {
 public:
  small_mutex() = default;
  small_mutex(const small_mutex&) = delete;
  small_mutex& operator=(const small_mutex&) = delete;

  void lock() noexcept {
    std::uint32_t expected = 0;
    if (state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed)) return;
    for (int spin = 0; spin < 64; ++spin) {
      expected = 0;
      if (state_.load(std::memory_order_relaxed) == 0 &&
          state_.compare_exchange_weak(expected, 1, std::memory_order_acquire, std::memory_order_relaxed)) {
        return;
      }
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    // Mark "locked with waiters" and sleep until it is released.
    while (state_.exchange(2, std::memory_order_acquire) != 0) state_.wait(2, std::memory_order_relaxed);
  }

  /// Takes the mutex only if it is free now.
  [[nodiscard]] bool try_lock() noexcept {
    std::uint32_t expected = 0;
    return state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed);
  }

  void unlock() noexcept {
    if (state_.exchange(0, std::memory_order_release) == 2) state_.notify_one();
  }

 private:
  std::atomic<std::uint32_t> state_{0};
};

}  // namespace securememory::detail
