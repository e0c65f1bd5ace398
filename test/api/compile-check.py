#!/usr/bin/env python3
"""What the public headers accept and refuse at compile time, checked with
the compiler that builds the project:

- every public header compiles on its own (-Wall -Wextra -Werror), and the
  umbrella header's cost (preprocessed lines) is printed;
- a with_bytes callback that could hand the bytes out of the call (a
  reference, pointer, iterator, span, string_view, view, or an optional,
  pair, tuple or array of them) does not compile, with the library's
  message; returning a copy does;
- a callback taking a mutable span, create() of a temporary, of const data
  or of elements wider than a byte do not compile; create() of a named
  std::string, std::array<unsigned char, N>, std::vector<std::byte> or a
  span does.

Usage: compile-check.py SOURCE_INCLUDE BUILD_INCLUDE CXX [ARGS...]"""
import os
import subprocess
import sys
import tempfile

src_inc, build_inc, cxx = sys.argv[1], sys.argv[2], sys.argv[3:]
flags = ["-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-I" + src_inc, "-I" + build_inc]
problems = []


def compile_text(text):
    with tempfile.NamedTemporaryFile("w", suffix=".cpp", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        run = subprocess.run(cxx + flags + [path], capture_output=True, text=True, timeout=300)
        return run.returncode, run.stdout + run.stderr
    finally:
        os.unlink(path)


PRELUDE = """#include <securememory/secret.hpp>
#include <array>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>
void f(const securememory::Secret& s, securememory::SecretFactory& factory) {
  (void)s; (void)factory;
  std::error_code ec; (void)ec;
"""

ESCAPE = "must not return a reference, pointer, iterator, span"
REFUSED = [
    ("the span itself", "(void)s.with_bytes([](std::span<const std::byte> b) { return b; });", ESCAPE),
    ("data()", "(void)s.with_bytes([](std::span<const std::byte> b) { return b.data(); });", ESCAPE),
    ("a reference to a byte", "(void)s.with_bytes([](std::span<const std::byte> b) -> const std::byte& { return b[0]; });", ESCAPE),
    ("subspan()", "(void)s.with_bytes([](std::span<const std::byte> b) { return b.subspan(1); });", ESCAPE),
    ("a string_view of the bytes",
     "(void)s.with_bytes([](std::span<const std::byte> b) { return std::string_view(reinterpret_cast<const char*>(b.data()), b.size()); });",
     ESCAPE),
    ("an iterator", "(void)s.with_bytes([](std::span<const std::byte> b) { return b.begin(); });", ESCAPE),
    ("an optional span", "(void)s.with_bytes([](std::span<const std::byte> b) { return std::optional(b); });", ESCAPE),
    ("a pair holding a span", "(void)s.with_bytes([](std::span<const std::byte> b) { return std::pair(1, b); });", ESCAPE),
    ("a tuple holding a pointer", "(void)s.with_bytes([](std::span<const std::byte> b) { return std::tuple(1, b.data()); });", ESCAPE),
    ("a span through the error_code form", "(void)s.with_bytes([](std::span<const std::byte> b) { return b; }, ec);", ESCAPE),
    ("a callback taking a mutable span", "s.with_bytes([](std::span<std::byte>) {});", "reader_callback"),
    ("create() of a temporary", "(void)factory.create(std::string(\"key\"));", "wipes its source"),
    ("create() of const data", "const std::string k = \"key\"; (void)factory.create(k);", "writable_byte_range"),
    ("create() of ints", "std::vector<int> v(4); (void)factory.create(v);", "writable_byte_range"),
]
ACCEPTED = [
    ("a size", "(void)s.with_bytes([](std::span<const std::byte> b) { return b.size(); });"),
    ("a copy", "(void)s.with_bytes([](std::span<const std::byte> b) { return std::vector<std::byte>(b.begin(), b.end()); });"),
    ("void", "s.with_bytes([](std::span<const std::byte>) {});"),
    ("the error_code form", "auto n = s.with_bytes([](std::span<const std::byte> b) { return b.size(); }, ec); (void)n;"),
    ("create() of a named std::string", "std::string k = \"key\"; (void)factory.create(k);"),
    ("create() of a std::array<unsigned char, 4>", "std::array<unsigned char, 4> k{}; (void)factory.create(k);"),
    ("create() of a std::vector<std::byte>", "std::vector<std::byte> k(4); (void)factory.create(k);"),
    ("create() of a temporary span over a named buffer", "std::vector<std::byte> k(4); (void)factory.create(std::span(k));"),
    ("create() with an error_code", "std::vector<std::byte> k(4); (void)factory.create(k, ec);"),
    ("catching Error with only secret.hpp", "try { s.verify(); } catch (const securememory::Error& e) { (void)e.sys_errno(); }"),
]

for name, body, expected in REFUSED:
    rc, out = compile_text(PRELUDE + body + "\n}\n")
    if rc == 0:
        problems.append(f"compiled, but must not: {name}")
    elif expected not in out:
        problems.append(f"refused without the expected message ({expected!r}): {name}\n{out[:2000]}")
for name, body in ACCEPTED:
    rc, out = compile_text(PRELUDE + body + "\n}\n")
    if rc != 0:
        problems.append(f"must compile: {name}\n{out[:2000]}")

headers = sorted(h for h in os.listdir(os.path.join(src_inc, "securememory")) if h.endswith(".hpp"))
headers.append("version.hpp")  # generated into the build tree
for h in headers:
    rc, out = compile_text(f"#include <securememory/{h}>\n")
    if rc != 0:
        problems.append(f"{h} does not compile on its own:\n{out[:2000]}")

pre = subprocess.run(cxx + ["-std=c++20", "-E", "-I" + src_inc, "-I" + build_inc, "-x", "c++", "-"],
                     input="#include <securememory/securememory.hpp>\n", capture_output=True, text=True, timeout=300)
vec = subprocess.run(cxx + ["-std=c++20", "-E", "-x", "c++", "-"], input="#include <vector>\n",
                     capture_output=True, text=True, timeout=300)
print(f"umbrella header: {len(pre.stdout.splitlines())} preprocessed lines (<vector>: {len(vec.stdout.splitlines())})")

for p in problems:
    print("FAIL:", p)
print(f"compile-check: {len(REFUSED)} refused forms, {len(ACCEPTED)} accepted forms, {len(headers)} headers alone; "
      f"{len(problems)} problems")
sys.exit(1 if problems else 0)
