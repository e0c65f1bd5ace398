#!/usr/bin/env python3
"""Runs the libFuzzer harness for Meson's tests (see test/fuzz/meson.build).

Usage: run.py corpus   HARNESS CORPUS_DIR WORK_DIR
       run.py session  HARNESS CORPUS_DIR WORK_DIR
       run.py campaign HARNESS CORPUS_DIR WORK_DIR

Both run the harness once per target: each backend the library registers
(the harness lists backend_names()) alone, then all of them in one process ("all": secrets of different backends inside each other's
callbacks, sealed's key in a secretmem arena next to secretmem secrets).
$SECUREMEMORY_FUZZ_BACKENDS (comma-separated) replaces the list of single
backends; a backend that is not available on this host is reported as
skipped (the harness exits 77). $SECUREMEMORY_FUZZ_TARGETS (comma-separated
target names, "all" included) keeps only those targets, e.g. to run the
rest of a campaign whose first targets are done.

corpus:  runs every checked-in input once per target (a regression test).
session: fuzzes for $SECUREMEMORY_FUZZ_SECONDS seconds of wall time in total
         (default 150), starting from the checked-in corpus, split evenly
         over the targets, as many at once as there are cores (at most 2);
         new inputs go to WORK_DIR/fuzz-corpus-TARGET, a crashing input to
         WORK_DIR/fuzz-artifacts/TARGET-*.
campaign: a fixed number of executions, $SECUREMEMORY_FUZZ_RUNS (default
         10,000,000) in total, split evenly over the targets and each
         target's share over as many jobs as there are cores (at most 2,
         so that no core idles while the last target runs), each job
         fuzzing from the checked-in corpus into
         WORK_DIR/fuzz-corpus-TARGET-JOB with libFuzzer's -runs.
Each target prints one line, and the last line sums them (all written to
WORK_DIR/fuzz-<mode>.txt): "fuzz-<mode> [TARGET]: N executions in S s,
K crashes". Exits non-zero on any crash, leak, sanitizer report or
invariant violation."""
import math
import os
import re
import shutil
import subprocess
import sys
import time

SKIPPED = 77  # the harness's exit status when none of its backends is available
SKIP_MESSAGE = "none of the requested backends is available on this host"


def registered(harness, env):
    """The backends the library registers, as the harness lists them (backend_names())."""
    out = subprocess.run([harness], env=dict(env, SECUREMEMORY_FUZZ_LIST_BACKENDS="1"), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, check=True, timeout=120).stdout
    return [line for line in out.splitlines() if line]


def targets(env, harness):
    chosen = env.get("SECUREMEMORY_FUZZ_BACKENDS", "")
    singles = [b for b in chosen.split(",") if b] if chosen else registered(harness, env)
    result = [(b, b) for b in singles]
    if len(singles) > 1:
        result.append(("all", ",".join(singles)))
    keep = [t for t in env.get("SECUREMEMORY_FUZZ_TARGETS", "").split(",") if t]
    if keep:
        result = [t for t in result if t[0] in keep]
    return result


def start(mode, harness, corpus, work, env, name, backends, seconds, runs=0, job=""):
    artifacts = os.path.join(work, "fuzz-artifacts")
    common = [f"-artifact_prefix={artifacts}/{name}{job}-", "-print_final_stats=1", "-timeout=30", "-rss_limit_mb=4096"]
    inputs = sorted(os.path.join(corpus, f) for f in os.listdir(corpus))
    if mode == "corpus":
        cmd = [harness] + common + inputs
    else:
        new_corpus = os.path.join(work, f"fuzz-corpus-{name}{job}")
        shutil.rmtree(new_corpus, ignore_errors=True)
        os.makedirs(new_corpus)
        limit = f"-runs={runs}" if mode == "campaign" else f"-max_total_time={seconds}"
        cmd = [harness] + common + [limit, "-max_len=1024", "-len_control=100", new_corpus, corpus]
    log = open(os.path.join(work, f"fuzz-{mode}-{name}{job}.log"), "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, env=dict(env, SECUREMEMORY_FUZZ_BACKENDS=backends), stdout=log,
                            stderr=subprocess.STDOUT)
    return {"name": name, "job": job, "proc": proc, "log": log, "start": time.monotonic(),
            "before": set(os.listdir(artifacts))}


def finish(mode, work, job):
    rc = job["proc"].wait()
    elapsed = time.monotonic() - job["start"]
    job["log"].close()
    log = job["log"].name
    with open(log, encoding="utf-8", errors="replace") as f:
        out = f.read()
    name = job["name"]
    # 77 is also libFuzzer's exit status for a crash (-error_exitcode): a
    # skip is 77 with the harness's own message, and nothing else.
    if rc == SKIPPED and SKIP_MESSAGE in out and "ERROR:" not in out:
        return {"line": f"fuzz-{mode} [{name}]: skipped (not available on this host)", "bad": False,
                "executions": 0, "crashes": 0}
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    if m:
        executions = int(m.group(1))
    else:  # running a list of files prints "Running: FILE" once per input
        executions = len(re.findall(r"^Running: ", out, re.M))
    artifacts = os.path.join(work, "fuzz-artifacts")
    crashes = sorted(os.path.join(artifacts, c) for c in set(os.listdir(artifacts)) - job["before"]
                     if c.startswith(name + job["job"] + "-"))
    if mode == "corpus" and rc != 0:
        # Inputs run from files leave no artifact: the failing one is the
        # last that started and did not finish.
        started = re.findall(r"^Running: (.*)$", out, re.M)
        finished = set(re.findall(r"^Executed (.*) in ", out, re.M))
        crashes += [f for f in started if f not in finished]
    bad = rc != 0 or bool(crashes)
    line = f"fuzz-{mode} [{name}{job['job']}]: {executions} executions in {elapsed:.0f} s, {len(crashes)} crashes"
    if mode != "corpus":
        grown = len(os.listdir(os.path.join(work, f"fuzz-corpus-{name}{job['job']}")))
        line += f", corpus grown by {grown} inputs"
    totals = re.search(r"^secret-fuzz: (\d+) steps, (\d+) injected failures", out, re.M)
    if totals:
        line += f" ({totals.group(1)} steps, {totals.group(2)} injected failures)"
    if bad:
        line += f" (exit status {rc}; log {log})"
        print("\n".join(out.splitlines()[-60:]))
        for c in crashes:
            print(f"crash input: {c}")
    return {"line": line, "bad": bad, "executions": executions, "crashes": len(crashes)}


def main():
    mode, harness, corpus, work = sys.argv[1:5]
    if mode not in ("corpus", "session", "campaign"):
        sys.exit(f"unknown mode {mode}")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    os.makedirs(os.path.join(work, "fuzz-artifacts"), exist_ok=True)
    todo = targets(env, harness)
    # The corpus runs take about a second each: one at a time. Sessions run
    # as many at once as there are cores (each fuzzer is one thread), each
    # for an even share of the wall-time budget.
    parallel = 1 if mode == "corpus" else max(1, min(2, os.cpu_count() or 1))
    budget = int(env.get("SECUREMEMORY_FUZZ_SECONDS", "150"))
    seconds = max(1, budget // math.ceil(len(todo) / parallel))
    runs = 0
    if mode == "campaign":
        total = int(env.get("SECUREMEMORY_FUZZ_RUNS", "10000000"))
        runs = max(1, total // (len(todo) * parallel))
        todo = [(name, backends, f"-{i}") for name, backends in todo for i in range(parallel)]
    else:
        todo = [(name, backends, "") for name, backends in todo]
    begin = time.monotonic()
    results = []
    running = []
    while todo or running:
        while todo and len(running) < parallel:
            name, backends, job = todo.pop(0)
            running.append(start(mode, harness, corpus, work, env, name, backends, seconds, runs, job))
        job = running.pop(0)
        results.append(finish(mode, work, job))
        print(results[-1]["line"], flush=True)
    lines = [r["line"] for r in results]
    summary = (f"fuzz-{mode}: {sum(r['executions'] for r in results)} executions in "
               f"{time.monotonic() - begin:.0f} s, {sum(r['crashes'] for r in results)} crashes, "
               f"{len(results)} targets")
    if any(r["bad"] for r in results):
        summary += " (FAILED)"
    lines.append(summary)
    print(summary)
    with open(os.path.join(work, f"fuzz-{mode}.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    sys.exit(1 if any(r["bad"] for r in results) else 0)


if __name__ == "__main__":
    main()
