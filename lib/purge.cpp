// securememory: emergency purge (include/securememory/purge.hpp).
//
// Theory of operation. purge() asks the state machine to close every live
// secret without waiting (purge_all below: a walk over the state
// pool's blocks in use), then empties the page caches, which also drops
// idle keys (page_cache.hpp's idle holders). The signal path cannot lock or
// allocate: emergency_wipe_all() walks the same blocks without the pool's
// lock and zeroes each live secret's bytes in place (mprotect to make them
// writable, then stores), and each backend's emergency hook wipes what
// belongs to no secret (sealed: its keys and plaintext scratch). The
// handler then restores the previous disposition and raises the signal
// again; the signal is blocked while the handler runs, so it is delivered
// once the handler returns, to the previous disposition.
#include <securememory/purge.hpp>

#include "internal.hpp"
#include "page_cache.hpp"
#include "secret_state.hpp"
#include "state_pool.hpp"

#include <securememory/error.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>

namespace securememory {
namespace detail {
namespace {

constexpr std::size_t max_hooks = 4;
constinit std::array<std::atomic<emergency_hook>, max_hooks> hooks{};

// The dispositions in force before purge_on_signals(), one per signal.
constexpr int max_signal = 65;
constinit std::array<struct sigaction, max_signal> previous{};

void wipe_everything() noexcept {
  emergency_wipe_all();
  for (auto& h : hooks) {
    if (const auto fn = h.load(std::memory_order_acquire)) fn();
  }
}

void on_signal(int sig) noexcept {
  const int saved_errno = errno;
  wipe_everything();
  // Back to the disposition before ours, then the signal again: delivered
  // to it when this handler returns (the signal is blocked until then).
  (void)sigaction(sig, &previous[static_cast<std::size_t>(sig)], nullptr);
  (void)raise(sig);
  errno = saved_errno;
}

}  // namespace

// --- purge ----------------------------------------------------------------

std::size_t purge_all() noexcept {
  // Passes over the pool until one finds no open secret: each collects up
  // to a batch of live states (a reference each, taken under the pool's
  // lock), then purges them outside it. No allocation: purge() must work
  // when memory is short.
  constexpr std::size_t batch = 256;
  std::size_t purged = 0;
  for (;;) {
    struct collected {
      std::array<secret_state*, batch> states{};
      std::size_t count = 0;
      bool more = false;
    } c;
    state_pool::for_each_in_use(
        // NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
        [](void* block, void* context) noexcept {
          auto& col = *static_cast<collected*>(context);
          auto* s = static_cast<secret_state*>(block);
          if (s->is_closed()) return;  // closed, closing, or inherited
          if (col.count == col.states.size()) {
            col.more = true;
            return;
          }
          if (s->retain_if_alive()) col.states[col.count++] = s;
        },
        &c, true);
    for (std::size_t i = 0; i < c.count; ++i) {
      purged += c.states[i]->purge_now() ? 1 : 0;
      c.states[i]->drop();
    }
    if (!c.more) break;
  }
  return purged;
}

void emergency_wipe_all() noexcept {
  state_pool::for_each_in_use(
      [](void* block, void*) noexcept { static_cast<secret_state*>(block)->wipe_in_signal_handler(); }, nullptr, false);
}

void add_emergency_hook(emergency_hook hook) noexcept {
  for (auto& h : hooks) {
    emergency_hook expected = nullptr;
    if (h.compare_exchange_strong(expected, hook, std::memory_order_acq_rel) || expected == hook) return;
  }
}

}  // namespace detail

std::size_t purge() noexcept {
  const std::size_t purged = detail::purge_all();
  (void)detail::page_cache::release_all_caches();
  return purged;
}

void purge_on_signals(std::initializer_list<int> signals) {
  for (const int sig : signals) {
    if (sig <= 0 || sig >= detail::max_signal || sig == SIGKILL || sig == SIGSTOP) {
      throw Error(Errc::invalid_argument,
                  "purge_on_signals: signal " + std::to_string(sig) + " cannot be caught; nothing was installed");
    }
  }
  for (const int sig : signals) {
    struct sigaction action {};
    action.sa_handler = detail::on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    struct sigaction old {};
    if (sigaction(sig, &action, &old) != 0) {
      detail::throw_os_error(Errc::protection_failed, "purge_on_signals: cannot install a handler", "sigaction", errno);
    }
    // Installed twice in a row: keep what was there before the first.
    if (old.sa_handler != detail::on_signal) detail::previous[static_cast<std::size_t>(sig)] = old;
  }
}

}  // namespace securememory
