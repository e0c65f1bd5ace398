#!/usr/bin/env python3
"""Checks metrics_text() against the Prometheus text exposition format
(0.0.4) and against metrics(): metric and label names, HELP and TYPE once
per family and before its samples, samples of a family together, counters
named *_total, values non-negative numbers, label values escaped (a backend
named with a quote, a backend slash and a newline), every backend in every
family, three kinds of locked bytes, and sums equal to metrics()'s totals.
Usage: metrics-text-check.py PROGRAM"""
import re
import subprocess
import sys

out = subprocess.run([sys.argv[1]], capture_output=True, text=True, timeout=120, check=True).stdout
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\} (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
problems = []
help_seen, type_seen, done = {}, {}, set()
samples = []  # (family, labels, value)
current = None
totals = None
for n, line in enumerate(out.splitlines(), 1):
    if line.startswith("# totals "):
        totals = [int(x) for x in line.split()[2:]]
        continue
    if line.startswith("# HELP ") or line.startswith("# TYPE "):
        parts = line.split(" ", 3)
        if len(parts) < 4 or not NAME.match(parts[2]):
            problems.append(f"line {n}: malformed: {line!r}")
            continue
        name = parts[2]
        seen = help_seen if parts[1] == "HELP" else type_seen
        if name in seen:
            problems.append(f"line {n}: second {parts[1]} for {name}")
        seen[name] = parts[3]
        if parts[1] == "TYPE" and parts[3] not in ("counter", "gauge"):
            problems.append(f"line {n}: type {parts[3]!r}")
        if parts[1] == "TYPE" and parts[3] == "counter" and not name.endswith("_total"):
            problems.append(f"line {n}: counter {name} not named *_total")
        if current is not None and current != name:
            done.add(current)
        current = name
        continue
    m = SAMPLE.match(line)
    if not m:
        problems.append(f"line {n}: not a sample: {line!r}")
        continue
    family, labels, value = m.group(1), dict(LABEL.findall(m.group(2))), m.group(3)
    if family not in type_seen or family not in help_seen:
        problems.append(f"line {n}: sample of {family} before its HELP and TYPE")
    if family in done:
        problems.append(f"line {n}: samples of {family} not together")
    try:
        v = float(value)
        if v < 0 or v != v:
            problems.append(f"line {n}: value {value}")
    except ValueError:
        problems.append(f"line {n}: value {value!r} is not a number")
        v = 0
    samples.append((family, labels, v))

families = set(type_seen)
expected = {"securememory_secrets_created_total", "securememory_secrets_in_use", "securememory_secret_bytes",
            "securememory_mapped_bytes", "securememory_mappings", "securememory_failures_total",
            "securememory_violations_total", "securememory_locked_bytes"}
if families != expected:
    problems.append(f"families {sorted(families)}, expected {sorted(expected)}")
backends = {l["backend"] for _, l, _ in samples}
odd = 'odd\\"name\\\\with\\nnewline'  # as the format writes it
if odd not in backends:
    problems.append(f"the awkward backend name is not escaped as expected: {sorted(backends)}")
for f in expected:
    have = {l["backend"] for fam, l, _ in samples if fam == f}
    if have != backends:
        problems.append(f"{f}: backends {sorted(have)}, expected {sorted(backends)}")
kinds = {l.get("kind") for fam, l, _ in samples if fam == "securememory_locked_bytes"}
if kinds != {"secrets", "cache", "internal"}:
    problems.append(f"locked_bytes kinds {kinds}")


def total(family, **match):
    return sum(v for f, l, v in samples if f == family and all(l.get(k) == x for k, x in match.items()))


if totals is None:
    problems.append("no totals line")
else:
    in_use, locked, cached, internal = totals
    got = (total("securememory_secrets_in_use"), total("securememory_locked_bytes", kind="secrets"),
           total("securememory_locked_bytes", kind="cache"), total("securememory_locked_bytes", kind="internal"))
    if got != (in_use, locked, cached, internal):
        problems.append(f"sums {got} differ from metrics() {totals}")
    if in_use == 0 or cached == 0:
        problems.append(f"the program should hold secrets and cached pages: {totals}")

for p in problems:
    print("FAIL:", p)
print(f"metrics-text: {len(samples)} samples in {len(families)} families for {len(backends)} backends; "
      f"{len(problems)} problems")
sys.exit(1 if problems else 0)
