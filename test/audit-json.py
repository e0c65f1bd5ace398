#!/usr/bin/env python3
"""Runs securememory-audit --json and checks the document: one result per
backend x check, statuses PASS/FAIL/SKIP with a detail, the host section,
an overall result that matches the exit status; and exit status 2 for a
usage error. Usage: audit-json.py AUDIT_BINARY"""
import json
import subprocess
import sys

audit = sys.argv[1]
run = subprocess.run([audit, "--json", "--check", "round-trip", "--check", "wipe", "--check", "swap"],
                     capture_output=True, text=True, timeout=600)
doc = json.loads(run.stdout)
results = doc["results"]
backends = sorted({r["backend"] for r in results})
assert backends, "no backend in the results"
assert len(results) == 3 * len(backends), f"expected 3 checks per backend, got {len(results)} results"
for r in results:
    assert r["status"] in ("PASS", "FAIL", "SKIP"), r
    assert r["detail"], f"empty detail: {r}"
    assert r["check"] in ("round-trip", "wipe", "swap"), r
failed = any(r["status"] == "FAIL" for r in results)
assert doc["result"] == ("fail" if failed else "pass"), doc["result"]
assert run.returncode == (1 if failed else 0), f"exit status {run.returncode}"
for key in ("RLIMIT_MEMLOCK", "CAP_IPC_LOCK", "RLIMIT_CORE", "core_pattern", "memfd_secret", "gcore"):
    assert key in doc["host"], f"host lacks {key}"
bad = subprocess.run([audit, "--check", "no-such-check"], capture_output=True, text=True, timeout=60)
assert bad.returncode == 2, f"usage error exit status {bad.returncode}"
print(f"ok: {len(results)} results for {len(backends)} backends, result {doc['result']}")
