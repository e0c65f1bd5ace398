#!/usr/bin/env python3
"""Runs test/exit-program.cpp and judges its exit: status 0, the holders
closed in the order C++ destroys them (thread_locals, then atexit handlers
and statics in reverse order of construction, the first static last), the
library's logger still reporting the injected munmap failure on stderr, and
no sanitizer report. With --c-sink the program logs through a C sink
(securememory_set_log_sink), which must receive that message during exit.
Usage: exit-check.py PROGRAM [--c-sink]"""
import subprocess
import sys

c_sink = sys.argv[2:] == ["--c-sink"]
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                      errors="replace", timeout=120, check=False)
out, err = proc.stdout.splitlines(), proc.stderr
problems = []
if proc.returncode != 0:
    problems.append(f"exit status {proc.returncode} (expected 0)")
problems += [line for line in out if line.startswith("FAIL")]
statics = next((line.split()[1:] for line in out if line.startswith("backends:")), None)
if not statics:
    problems.append("no 'backends:' line: no per-backend static holders")
    statics = []
expected = (["thread_local(worker)", "main", "thread_local(main)", "atexit", "function-static", "static-reader"]
            + statics + ["static-with-failing-munmap", "exit"])
seen = [line.split(":")[0] for line in out if not line.startswith(("backends:", "FAIL"))]
if seen != expected:
    problems.append(f"closing order {seen}, expected {expected}")
if not out or not out[-1].startswith("exit: all secrets closed"):
    problems.append("the last static did not find every secret closed")
if "munmap" not in err or "closing a secret failed" not in err:
    problems.append("the library did not log the failed munmap during exit (is its logger gone?)")
if c_sink and not any(line.startswith("c-sink: 4 ") and "closing a secret failed" in line
                      for line in err.splitlines()):
    problems.append("the C log sink did not receive the failed munmap's message during exit")
for marker in ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:"):
    if marker in err:
        problems.append(f"sanitizer report: {marker}")
print("\n".join(out))
if problems:
    print(err[-4000:], file=sys.stderr)
    for p in problems:
        print(f"exit-check: {p}")
    sys.exit(1)
sink = "the C log sink" if c_sink else "the logger"
print(f"exit-check: {len(expected)} holders closed in order during exit; {sink}, registry and counters outlived them")
