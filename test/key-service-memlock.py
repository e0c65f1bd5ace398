#!/usr/bin/env python3
"""Runs examples/key-service as README says to: under a container's 64 KiB
RLIMIT_MEMLOCK, without CAP_IPC_LOCK. A page backend cannot lock 1,000 keys
there: the example must fail (status 1) with the library's memlock_limit
message and its advice (raise RLIMIT_MEMLOCK or use sealed); sealed, which
locks nothing per key, must succeed. Usage: key-service-memlock.py PROGRAM
BACKEND..."""
import ctypes
import os
import resource
import subprocess
import sys

PR_CAPBSET_DROP = 24
CAP_IPC_LOCK = 14
LIMIT = 64 * 1024


def limited():
    # Dropped from the bounding set, CAP_IPC_LOCK is gone after execve even
    # for root (whose permitted set is then inheritable | bounding).
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0 and libc.prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK)")
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (LIMIT, LIMIT))


program, backends = sys.argv[1], sys.argv[2:]
problems = []
for backend in backends:
    env = dict(os.environ, SECUREMEMORY_BACKEND=backend)
    proc = subprocess.run([program], env=env, preexec_fn=limited, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace", timeout=300, check=False)
    if proc.returncode == 77:
        print(f"key-service-memlock [{backend}]: skipped (not available on this host)")
        continue
    if backend == "sealed":
        ok = proc.returncode == 0 and "): OK" in proc.stdout
        expectation = "status 0 and OK"
    else:
        ok = (proc.returncode == 1 and "RLIMIT_MEMLOCK is 65536 bytes" in proc.stderr
              and "raise RLIMIT_MEMLOCK (ulimit -l) or use SECUREMEMORY_BACKEND=sealed" in proc.stderr)
        expectation = "status 1, the memlock_limit message and the advice"
    print(f"key-service-memlock [{backend}]: status {proc.returncode}: {'as expected' if ok else 'NOT ' + expectation}")
    if not ok:
        problems.append(backend)
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
sys.exit(1 if problems else 0)
