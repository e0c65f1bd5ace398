#!/usr/bin/env python3
"""Runs securememory-audit --json and checks the document: one result per
backend x check, statuses PASS/FAIL/SKIP/N/A with a detail, N/A exactly for
the guarantees a backend does not declare, the guarantees section, the host
section, an overall result that matches the exit status; exit status 1 and
FAIL for a backend that declares guarantees it does not keep
(--selftest-broken); and exit status 2 for a usage error.
Usage: audit-json.py AUDIT_BINARY"""
import json
import subprocess
import sys

audit = sys.argv[1]
CHECKS = {"round-trip": None, "wipe": "wiped_on_release", "swap": "locked", "guard-pages": "guard_pages"}
args = [audit, "--json"]
for c in CHECKS:
    args += ["--check", c]
run = subprocess.run(args, capture_output=True, text=True, timeout=600)
doc = json.loads(run.stdout)
results = doc["results"]
backends = sorted({r["backend"] for r in results})
assert backends, "no backend in the results"
assert len(results) == len(CHECKS) * len(backends), f"expected {len(CHECKS)} checks per backend, got {len(results)}"
for r in results:
    assert r["status"] in ("PASS", "FAIL", "SKIP", "N/A"), r
    assert r["detail"], f"empty detail: {r}"
    assert r["check"] in CHECKS, r
    declared = doc["guarantees"][r["backend"]]
    guarantee = CHECKS[r["check"]]
    if guarantee is not None and not declared[guarantee]:
        assert r["status"] == "N/A", f"{r}: not declared, but not N/A"
    else:
        assert r["status"] != "N/A", f"{r}: declared, but N/A"
for b in backends:
    g = doc["guarantees"][b]
    assert "key_backend" in g, g
    assert "locked" in g and "outside_direct_map" in g, g
failed = any(r["status"] == "FAIL" for r in results)
assert doc["result"] == ("fail" if failed else "pass"), doc["result"]
assert run.returncode == (1 if failed else 0), f"exit status {run.returncode}"
for key in ("RLIMIT_MEMLOCK", "CAP_IPC_LOCK", "RLIMIT_CORE", "core_pattern", "memfd_secret", "gcore",
            "lib/os/ platform"):
    assert key in doc["host"], f"host lacks {key}"

# The POSIX core alone (-Dposix_only=true) has no dump exclusion, no fork
# rule and no secretmem: those guarantees are N/A for every backend, never
# PASS (memguard's pages are still MADV_DONTDUMP through a Linux libsodium,
# so only the declaration keeps its core-dump cell honest).
if doc["host"]["lib/os/ platform"].startswith("posix "):
    assert "secretmem" not in backends, backends
    reduced = subprocess.run([audit, "--json", "--check", "core-dump", "--check", "gcore", "--check", "fork"],
                             capture_output=True, text=True, timeout=600)
    rdoc = json.loads(reduced.stdout)
    assert len(rdoc["results"]) == 3 * len(backends), rdoc["results"]
    for r in rdoc["results"]:
        assert r["status"] == "N/A", f"{r}: posix_only must not claim it"
    for b in backends:
        assert not doc["guarantees"][b]["excluded_from_core_dumps"], b
        assert not doc["guarantees"][b]["hidden_from_fork_children"], b

# A backend that declares what it does not keep: the audit fails, exit 1.
broken = subprocess.run([audit, "--json", "--selftest-broken", "--backend", "audit-selftest-broken",
                         "--check", "wipe", "--check", "swap", "--check", "no-access"],
                        capture_output=True, text=True, timeout=600)
bdoc = json.loads(broken.stdout)
statuses = {r["check"]: r["status"] for r in bdoc["results"]}
assert statuses == {"wipe": "FAIL", "swap": "FAIL", "no-access": "FAIL"}, statuses
assert bdoc["result"] == "fail", bdoc["result"]
assert broken.returncode == 1, f"a failing audit exited with {broken.returncode}"

bad = subprocess.run([audit, "--check", "no-such-check"], capture_output=True, text=True, timeout=60)
assert bad.returncode == 2, f"usage error exit status {bad.returncode}"
print(f"ok: {len(results)} results for {len(backends)} backends, result {doc['result']}; the broken backend fails")
