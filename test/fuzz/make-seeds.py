#!/usr/bin/env python3
"""Writes the seed corpus of the libFuzzer harness (test/fuzz/corpus/).

Each seed is a small program in the harness's input format (see
secret-fuzz.cpp): per step a fault byte (f % 4 == 0: no fault; otherwise
two more bytes: which lib/os/ call, which errno; bits 2-3 of f: calls let
through first; bit 4: fail twice), an opcode, then its operands.
Usage: make-seeds.py [OUT_DIR]"""
import os
import sys

CREATE, RANDOM, WITH, ROPEN, RREAD, VERIFY, CLOSE, MOVE, SWAP, DESTROY, FACTORY, FORK, PARK, UNPARK, CACHE = range(15)
# FORK how (below 32, else no fork; how % 4: 0 plain, 1 two threads loop over
# with_bytes, 2 the same, forking while one is inside its callback, 3 from
# inside a callback; one fork per input), the child's
# choices (bit i: close() slot i before destroying it; bit 4: its own
# secrets are larger than a page), slots a and b.
# PARK helper (0 or 1), slot; UNPARK helper; CACHE limit (0, 4K, 64K, 1M).
CALLS = 12      # mmap munmap mlock munlock mprotect madvise memfd_secret ftruncate close setrlimit prctl read
                # (lib/os/os.hpp's enum call, indices modulo the real count)
ERRNOS = 4      # ENOMEM EPERM EAGAIN EINTR


def step(op, *operands, fault=None):
    """fault = (call index, errno index, skip, twice)"""
    if fault is None:
        head = [0]
    else:
        c, e, skip, twice = fault
        head = [1 | (skip << 2) | (int(twice) << 4), c, e]
    return bytes(head + [op] + list(operands))


def size_small(n):  # 1 + n % 64
    return [5, n - 1]


def size_u16(n):    # 1 + u16 % (3 * page)
    v = n - 1
    return [4, v & 0xFF, v >> 8]


seeds = {}
for b in range(4):  # backend index (modulo the number available)
    seeds[f"roundtrip-b{b}"] = b"".join([
        step(CREATE, b, 0, *size_small(32), 7),
        step(WITH, 0, 0, 0),
        step(ROPEN, 0, 0),
        step(RREAD, 0, 0, 5),
        step(RREAD, 0, 1, 0xFF, 0x0F),
        step(RREAD, 0, 0, 0),
        step(CLOSE, 0), step(CLOSE, 0),
        step(WITH, 0, 0, 0),
        step(RREAD, 0, 0, 3),
    ])
    seeds[f"variants-b{b}"] = b"".join([
        step(RANDOM, b, 1, *size_u16(5000)),
        step(CREATE, b, 2, 2, 1, 9),
        step(WITH, 1, 1, 0), step(WITH, 1, 2, 0), step(WITH, 1, 3, 0),
        step(WITH, 1, 5, 2), step(WITH, 1, 4, 0), step(WITH, 1, 0, 0),
        step(VERIFY, 2), step(VERIFY, 1),
    ])
    seeds[f"moves-b{b}"] = b"".join([
        step(CREATE, b, 0, *size_small(10), 1),
        step(RANDOM, b, 1, 3, 0),
        step(ROPEN, 2, 0),
        step(MOVE, 0, 3), step(MOVE, 3, 3), step(SWAP, 3, 1), step(SWAP, 2, 2),
        step(RREAD, 2, 0, 4), step(DESTROY, 1), step(RREAD, 2, 0, 4),
        step(MOVE, 3, 1), step(DESTROY, 2),
    ])
    seeds[f"sizes-b{b}"] = b"".join(
        [step(RANDOM, b, 0, 0, i) for i in range(6)]
        + [step(RANDOM, b, 0, 1), step(CREATE, b, 0, 0, 3), step(CREATE, b, 0, 1, 3)]
        + [step(RANDOM, b, 0, 2, i) for i in range(3)] + [step(RANDOM, b, 0, 3, i) for i in range(3)])
    for c in range(CALLS):
        seeds[f"fault-create-call{c}-b{b}"] = b"".join(
            [step(CREATE, b, 0, *size_small(20), 2, fault=(c, e, skip, e == 1))
             for e in range(ERRNOS) for skip in range(3)]
            + [step(RANDOM, b, 1, *size_small(33), fault=(c, 0, 0, False))])
        seeds[f"fault-use-call{c}-b{b}"] = b"".join([
            step(CREATE, b, 0, *size_small(40), 3),
            step(ROPEN, 0, 0),
            step(WITH, 0, 0, 0, fault=(c, 0, 0, False)),
            step(WITH, 0, 0, 0, fault=(c, 1, 1, False)),
            step(WITH, 0, 1, 0, fault=(c, 2, 1, False)),
            step(RREAD, 0, 0, 6, fault=(c, 3, 0, False)),
            step(RREAD, 0, 0, 6, fault=(c, 0, 1, False)),
            step(RANDOM, b, 1, *size_small(8)),
            step(WITH, 0, 5, 1, fault=(c, 0, 2, True)),
            step(WITH, 1, 4, 0, fault=(c, 0, 1, False)),
            step(CLOSE, 0, fault=(c, 0, 0, False)),
            step(CREATE, b, 2, *size_small(8), 4),
            step(CREATE, b, 2, *size_small(9), 5, fault=(c, 1, 1, True)),
            step(DESTROY, 2, fault=(c, 0, 0, False)),
        ])
    # Secrets larger than a page: sealed opens them into their own locked
    # mapping, memguard and protectedmemory lock several pages.
    for c in range(CALLS):
        seeds[f"fault-large-call{c}-b{b}"] = b"".join([
            step(CREATE, b, 0, *size_u16(5000), 6, fault=(c, 0, 0, False)),
            step(CREATE, b, 0, *size_u16(5000), 6),
            step(WITH, 0, 0, 0, fault=(c, 1, 0, False)),
            step(WITH, 0, 0, 0, fault=(c, 2, 2, True)),
            step(ROPEN, 1, 0),
            step(RREAD, 1, 1, 0x10, 0x10, fault=(c, 0, 1, False)),
            step(WITH, 0, 5, 0, fault=(c, 3, 3, True)),
            step(CLOSE, 0, fault=(c, 0, 0, True)),
        ])
    # fork, each way (one fork per input), with secrets open, a reader, a
    # large secret.
    for how in range(4):
        seeds[f"fork{how}-b{b}"] = b"".join([
            step(CREATE, b, 0, *size_small(24), 1),
            step(RANDOM, b, 1, *size_u16(6000)),
            step(ROPEN, 0, 1),
            step(WITH, 0, 0, 0),
            step(FORK, how, [0b10101, 0b00110, 0b11011, 0b00001][how], how % 2, 1),
            step(CLOSE, 0), step(CLOSE, 1),
        ])
    # A helper parked inside a callback while the main thread shares the
    # opening, reads, forks (the child inherits a reader that does not exist
    # there), then closes (the helper is released first).
    seeds[f"park-fork-b{b}"] = b"".join([
        step(CREATE, b, 0, *size_small(48), 2),
        step(RANDOM, b, 1, *size_u16(5000)),
        step(PARK, 0, 0),
        step(PARK, 1, 1),
        step(WITH, 0, 2, 0),
        step(ROPEN, 0, 0), step(RREAD, 0, 0, 7),
        step(FORK, 0, 0b01111, 0, 0),
        step(UNPARK, 1, fault=(4, 0, 0, False)),
        step(CLOSE, 0), step(PARK, 0, 0), step(UNPARK, 0),
    ])
    # The page cache on: closed secrets' pages stay cached (and a child
    # inherits them), reused, evicted under an injected munmap failure.
    seeds[f"cache-b{b}"] = b"".join([
        step(CACHE, 3),
        step(CREATE, b, 0, *size_small(30), 3), step(CREATE, b, 1, *size_small(31), 4),
        step(CLOSE, 0), step(CLOSE, 1),
        step(CREATE, b, 2, *size_small(32), 5),
        step(FORK, 0, 0b11111, 0, 2),
        step(CACHE, 1),
        step(CREATE, b, 0, *size_u16(9000), 6), step(CLOSE, 0, fault=(1, 0, 0, False)),
        step(CREATE, b, 1, *size_small(8), 7), step(CLOSE, 1, fault=(1, 0, 0, False)),
        step(CACHE, 0),
    ])
    # A one-page cache: the second close evicts the first run, whose munmap
    # fails (found by the harness: the eviction dropped it; now logged and counted).
    seeds[f"evict-b{b}"] = b"".join([
        step(CACHE, 1),
        step(CREATE, b, 0, *size_small(20), 1), step(CREATE, b, 1, *size_small(21), 2),
        step(CLOSE, 0), step(CLOSE, 1, fault=(1, 0, 0, False)),
        step(CACHE, 0),
    ])
    # Enough multi-page secrets to need a second secretmem arena, closed
    # out of order, the arena-emptying close with an injected munmap failure.
    seeds[f"arenas-b{b}"] = b"".join(
        [step(RANDOM, b, i, *size_u16(9000 + i)) for i in range(4)]
        + [step(CLOSE, 2), step(CLOSE, 0), step(RANDOM, b, 0, *size_u16(12000)),
           step(CLOSE, 1, fault=(1, 0, 0, False)), step(CLOSE, 3, fault=(1, 0, 0, False)),
           step(CLOSE, 0, fault=(1, 1, 0, True))])
seeds["factory-names"] = b"".join([
    step(FACTORY, 15) + b"protectedmemory",
    step(FACTORY, 0),
    step(FACTORY, 9) + "pr\u00f6tect".encode(),
    step(FACTORY, 79) + b"x" * 79,
    step(FACTORY, 16) + b"protectedmemory\x00",
    step(FACTORY, 8) + b"memguard", step(FACTORY, 9) + b"secretmem", step(FACTORY, 6) + b"sealed",
])

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds written to {out}")
