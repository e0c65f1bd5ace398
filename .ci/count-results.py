#!/usr/bin/env python3
"""Counts test results from one or more Meson log directories and prints
one line "N passed, N failed, N skipped".

Usage: count-results.py [--step=NAME:EXIT_CODE ...] BUILD_DIR [BUILD_DIR ...] [--result NAME=RC ...]

A --step or --result is a check run outside Meson (the install check, the
CMake consumer, the ABI check, clang-tidy): one result, passed when its exit
code is 0, skipped when it is 77 (Meson's convention), failed otherwise.

testlog.json gives each Meson test's overall result; testlog.junit.xml
gives the TAP test cases (one Catch2 TEST_CASE each) of the tests that
speak TAP. A TAP test counts its cases; if the program itself failed
(crash, non-zero exit, timeout) with no failing case, that is one more
failure, so a crash after the last "ok" line is never lost. A non-TAP test
is one result. A build directory without logs counts as one failure.
--result NAME=RC adds one result from a CI step that is not a Meson test
(clang-tidy): passed when RC is 0, skipped when 77, failed otherwise."""
import json
import os
import sys
import xml.etree.ElementTree as ET

BAD = {"FAIL", "ERROR", "TIMEOUT", "UNEXPECTEDPASS"}
passed = failed = skipped = 0

args = sys.argv[1:]
builds = []
while args:
    arg = args.pop(0)
    if arg.startswith("--step="):
        name, _, code = arg[len("--step="):].rpartition(":")
        arg, args = "--result", [f"{name}={code}"] + args
    if arg == "--result" and args:
        name, _, rc = args.pop(0).partition("=")
        if rc.strip() == "0":
            passed += 1
        elif rc.strip() == "77":
            print(f"count-results: {name} skipped", file=sys.stderr)
            skipped += 1
        else:
            print(f"count-results: {name} failed", file=sys.stderr)
            failed += 1
    else:
        builds.append(arg)

for build in builds:
    logs = os.path.join(build, "meson-logs")
    try:
        tests = [json.loads(line) for line in open(os.path.join(logs, "testlog.json"), encoding="utf-8")]
        root = ET.parse(os.path.join(logs, "testlog.junit.xml")).getroot()
    except (OSError, ValueError, ET.ParseError) as e:
        print(f"count-results: no usable logs in {build}: {e}", file=sys.stderr)
        failed += 1
        continue
    cases = {}  # TAP test name -> [passed, failed, skipped]
    for suite in root.iter("testsuite"):
        name = suite.get("name", "")
        if "." not in name:
            continue  # non-TAP tests: counted from testlog.json
        counts = cases.setdefault(name.split(".", 1)[1], [0, 0, 0])
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                counts[1] += 1
            elif case.find("skipped") is not None:
                counts[2] += 1
            else:
                counts[0] += 1
    for test in tests:
        result = test.get("result", "ERROR")
        if test["name"] in cases:
            p, f, s = cases[test["name"]]
            passed, failed, skipped = passed + p, failed + f, skipped + s
            if result in BAD and f == 0:
                failed += 1
        elif result in BAD:
            failed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            passed += 1

print(f"{passed} passed, {failed} failed, {skipped} skipped")
