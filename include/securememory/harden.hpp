// securememory: opt-in, process-wide hardening.
//
// The library never changes process-wide settings by itself (unlike
// Asherah, which disables core dumps on import): each secret's pages are
// excluded from core dumps on their own. harden_process() is for programs
// that want more: no core dumps at all, and no same-user ptrace or
// /proc/PID/mem access.
#pragma once

#include <securememory/config.hpp>

#include <cstdint>

namespace securememory {

/// What harden_process() should change. Both are on by default.
struct HardenOptions {
  /// Set RLIMIT_CORE to 0, soft and hard: this process (and children it
  /// forks later) can no longer write core files, and without
  /// CAP_SYS_RESOURCE cannot raise the limit again.
  bool disable_core_dumps = true;
  /// prctl(PR_SET_DUMPABLE, 0): no core dumps either, and processes of the
  /// same user can no longer ptrace this one or read its /proc/PID/mem
  /// (processes with CAP_SYS_PTRACE, e.g. root, still can). Reset by the
  /// kernel on execve() of a normal binary.
  bool disable_ptrace = true;
};

/// What harden_process() found and changed.
struct HardenReport {
  /// True when this call lowered RLIMIT_CORE (false: not requested, or both
  /// limits were already 0).
  bool core_limit_changed = false;
  /// RLIMIT_CORE before the call (UINT64_MAX means unlimited).
  std::uint64_t previous_core_soft = 0;
  std::uint64_t previous_core_hard = 0;
  /// True when this call cleared the dumpable flag (false: not requested,
  /// or it was already 0).
  bool dumpable_changed = false;
  /// PR_GET_DUMPABLE before the call (0, 1 or 2); -1 when not queried.
  int previous_dumpable = -1;
};

/// Applies the selected hardening to the whole process and returns what it
/// changed. Steps run in order (core limit, then dumpable); when one fails
/// it throws error(errc::protection_failed) with the failing call's errno,
/// and the message says which earlier step already took effect.
/// Thread-safe (the settings are process-wide; the last caller wins).
SECUREMEMORY_API HardenReport harden_process(const HardenOptions& options = {});

/// The names of earlier versions, kept so that code written against them
/// still compiles (docs/design.md, "Names").
using harden_options = HardenOptions;
using harden_report = HardenReport;

}  // namespace securememory
