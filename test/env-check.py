#!/usr/bin/env python3
"""Runs test/env-program.cpp under each value of the library's environment
variables and checks what it read: SECUREMEMORY_PAGE_CACHE formats (bytes,
K/M/G suffixes in either case, 0), a malformed or overflowing value (the
1M default and a warning on stderr), the largest value (read once like any
other: a later setenv changes nothing), and SECUREMEMORY_BACKEND (unset or
empty: protectedmemory; unknown: unknown_backend, with control characters
escaped). Usage: env-check.py PROGRAM [HAVE_SECRETMEM: 1 or 0]"""
import os
import subprocess
import sys

PROGRAM = sys.argv[1]
# Whether secretmem is built (Linux, not posix_only): it provides
# outside_direct_map; without it no registered backend does.
HAVE_SECRETMEM = len(sys.argv) > 2 and sys.argv[2] == "1"
PROVIDER_OF_OUTSIDE_DIRECT_MAP = '"secretmem"' if HAVE_SECRETMEM else "no registered backend provides it on this host"
UNKNOWN_BACKEND = 6  # securememory::errc::unknown_backend
problems = []


def run(**env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("SECUREMEMORY_")}
    full.update(env)
    proc = subprocess.run([PROGRAM], env=full, capture_output=True, text=True, errors="replace", timeout=60, check=False)
    if proc.returncode != 0:
        problems.append(f"{env}: exit status {proc.returncode}: {proc.stderr.strip()}")
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines()), proc.stderr


def expect_limit(value, limit, warning=False):
    env = {} if value is None else {"SECUREMEMORY_PAGE_CACHE": value}
    out, err = run(**env)
    for key in ("limit", "again"):
        if out.get(key) != str(limit):
            problems.append(f"SECUREMEMORY_PAGE_CACHE={value!r}: {key} {out.get(key)}, expected {limit}")
    warned = "SECUREMEMORY_PAGE_CACHE is not a byte count" in err
    if warned != warning:
        problems.append(f"SECUREMEMORY_PAGE_CACHE={value!r}: warning on stderr {warned}, expected {warning}")


MIB = 1 << 20
expect_limit(None, MIB)
expect_limit("", MIB)
expect_limit("0", 0)
expect_limit("262144", 262144)
expect_limit("512K", 512 << 10)
expect_limit("512k", 512 << 10)
expect_limit("4M", 4 * MIB)
expect_limit("1G", 1 << 30)
expect_limit("2g", 2 << 30)
expect_limit("18446744073709551615", 18446744073709551615)  # was re-read on every call (the "not read yet" value)
expect_limit("bad", MIB, warning=True)
expect_limit("12Q", MIB, warning=True)
expect_limit("-1", MIB, warning=True)
expect_limit("18446744073709551616", MIB, warning=True)  # overflows
expect_limit("17179869184G", MIB, warning=True)  # overflows once scaled

out, _ = run()
if out.get("backend") != "protectedmemory":
    problems.append(f"SECUREMEMORY_BACKEND unset: {out}")
out, _ = run(SECUREMEMORY_BACKEND="")
if out.get("backend") != "protectedmemory":
    problems.append(f"SECUREMEMORY_BACKEND empty: {out}")
out, _ = run(SECUREMEMORY_BACKEND="sealed")
if out.get("backend") != "sealed":
    problems.append(f"SECUREMEMORY_BACKEND=sealed: {out}")
out, _ = run(SECUREMEMORY_BACKEND="ev\x1b[31mil\ttab")
error = out.get("error", "")
if not error.startswith(f"{UNKNOWN_BACKEND} ") or "\x1b" in error or "\t" in error or "ev\\x1b[31mil\\x09tab" not in error:
    problems.append(f"SECUREMEMORY_BACKEND with control characters: {error!r}")

# SECUREMEMORY_REQUIRE: the guarantees make_factory() demands.
BACKEND_UNAVAILABLE = 8  # errc::backend_unavailable
INVALID_ARGUMENT = 12    # errc::invalid_argument
out, _ = run(SECUREMEMORY_BACKEND="protectedmemory", SECUREMEMORY_REQUIRE="locked, outside_direct_map,guard_pages")
error = out.get("error", "")
if not error.startswith(f"{BACKEND_UNAVAILABLE} ") or "outside_direct_map" not in error or "guard_pages" not in error \
        or "locked (" in error or PROVIDER_OF_OUTSIDE_DIRECT_MAP not in error:
    problems.append(f"SECUREMEMORY_REQUIRE not met: {error!r}")
out, _ = run(SECUREMEMORY_BACKEND="memguard", SECUREMEMORY_REQUIRE="guard_pages,canary")
if out.get("backend") != "memguard":
    problems.append(f"SECUREMEMORY_REQUIRE met: {out}")
out, _ = run(SECUREMEMORY_REQUIRE="bogus")
if not out.get("error", "").startswith(f"{INVALID_ARGUMENT} ") or "wiped_on_release" not in out.get("error", ""):
    problems.append(f"SECUREMEMORY_REQUIRE with an unknown name: {out}")

for p in problems:
    print("FAIL:", p)
print(f"env-check: {len(problems)} problems")
sys.exit(1 if problems else 0)
