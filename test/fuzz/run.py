#!/usr/bin/env python3
"""Runs the libFuzzer harness for Meson's tests (see test/fuzz/meson.build).

Usage: run.py corpus  HARNESS CORPUS_DIR WORK_DIR
       run.py session HARNESS CORPUS_DIR WORK_DIR

corpus:  runs every checked-in input once (a regression test).
session: fuzzes for $SECUREMEMORY_FUZZ_SECONDS seconds (default 150),
         starting from the checked-in corpus; new inputs go to
         WORK_DIR/fuzz-corpus, a crashing input to WORK_DIR/fuzz-artifacts/.
Both print one summary line (also written to WORK_DIR/fuzz-<mode>.txt):
"fuzz-<mode>: N executions in S s, K crashes" and exit non-zero on any
crash, leak, sanitizer report or invariant violation."""
import os
import re
import shutil
import subprocess
import sys
import time


def main():
    mode, harness, corpus, work = sys.argv[1:5]
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    artifacts = os.path.join(work, "fuzz-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    common = [f"-artifact_prefix={artifacts}/", "-print_final_stats=1", "-timeout=30", "-rss_limit_mb=4096"]
    inputs = sorted(os.path.join(corpus, f) for f in os.listdir(corpus))
    if mode == "corpus":
        cmd = [harness] + common + inputs
    elif mode == "session":
        seconds = int(env.get("SECUREMEMORY_FUZZ_SECONDS", "150"))
        new_corpus = os.path.join(work, "fuzz-corpus")
        shutil.rmtree(new_corpus, ignore_errors=True)
        os.makedirs(new_corpus)
        cmd = [harness] + common + [f"-max_total_time={seconds}", "-max_len=1024", "-len_control=100",
                                    new_corpus, corpus]
    else:
        sys.exit(f"unknown mode {mode}")
    before = set(os.listdir(artifacts))
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", check=False)
    elapsed = time.monotonic() - start
    out = proc.stdout
    log = os.path.join(work, f"fuzz-{mode}.log")
    with open(log, "w", encoding="utf-8") as f:
        f.write(out)
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    if m:
        executions = int(m.group(1))
    else:  # running a list of files prints "Running: FILE" once per input
        executions = len(re.findall(r"^Running: ", out, re.M))
    crashes = sorted(os.path.join(artifacts, c) for c in set(os.listdir(artifacts)) - before)
    if mode == "corpus" and proc.returncode != 0:
        # Inputs run from files leave no artifact: the failing one is the
        # last that started and did not finish.
        started = re.findall(r"^Running: (.*)$", out, re.M)
        finished = set(re.findall(r"^Executed (.*) in ", out, re.M))
        crashes += [f for f in started if f not in finished]
    bad = proc.returncode != 0 or crashes
    summary = f"fuzz-{mode}: {executions} executions in {elapsed:.0f} s, {len(crashes)} crashes"
    if mode == "session":
        summary += f", corpus grown to {len(os.listdir(os.path.join(work, 'fuzz-corpus')))} new inputs"
    if bad:
        summary += f" (exit status {proc.returncode}; log {log})"
        tail = out.splitlines()[-60:]
        print("\n".join(tail))
        for c in crashes:
            print(f"crash input: {c}")
    print(summary)
    with open(os.path.join(work, f"fuzz-{mode}.txt"), "w", encoding="utf-8") as f:
        f.write(summary + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
