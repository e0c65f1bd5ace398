#!/usr/bin/env python3
"""The shared library exports the public API and nothing else.

Usage: exported-symbols.py LIBSECUREMEMORY_SO SECUREMEMORY_H

Lists the dynamic symbols the library defines (nm -D --defined-only) and
fails on any outside the public API:
  - C: exactly the securememory_* functions declared in securememory.h
    (each one exported, none more);
  - C++: names in namespace securememory (functions, data, typeinfo,
    typeinfo names and vtables); in securememory::detail only the entry
    points that inline code of the public headers calls (ALLOWED_DETAIL).
It also fails when the library links or imports spdlog or fmt (they are
compiled in, private), and when the symbols a program needs to catch
securememory::error by type are missing. Exit status 0 when all holds.
"""
import re
import subprocess
import sys

# securememory::detail functions the public headers' inline code calls.
# Exporting another detail symbol is a decision: add it here, with the
# header that needs it.
ALLOWED_DETAIL = (
    "securememory::detail::retain(",          # secret.hpp: state_ref
    "securememory::detail::drop(",            # secret.hpp: state_ref
    "securememory::detail::throw_null_callback(",  # secret.hpp: with_bytes
    "securememory::detail::access_scope::",   # secret.hpp: with_bytes
)

# Symbols without which the API does not work across the library boundary.
REQUIRED = (
    "typeinfo for securememory::error",  # catch (const securememory::error&)
    "vtable for securememory::Backend",  # user backends derive from it
    "securememory::make_factory()",
    "securememory::set_log_sink(",
)

# A C++ name in namespace securememory: a nested name (N, then a member
# function's qualifiers) or a typeinfo/typeinfo name/vtable (_ZTI/_ZTS/_ZTV).
CXX_PUBLIC = re.compile(r"^_Z(?:N[rVKRO]*|T[ISV]N)12securememory")


def run(*command):
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def demangle(names):
    if not names:
        return []
    out = subprocess.run(["c++filt"], input="\n".join(names), check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def main():
    library, header = sys.argv[1], sys.argv[2]
    problems = []

    defined = sorted({line.split()[-1] for line in run("nm", "-D", "--defined-only", library).splitlines() if line.strip()})
    demangled = dict(zip(defined, demangle(defined)))

    with open(header, encoding="utf-8") as f:
        declared = set(re.findall(r"SECUREMEMORY_C_API\s+[^;]*?\b(securememory_\w+)\s*\(", f.read()))
    if not declared:
        problems.append(f"no SECUREMEMORY_C_API function found in {header}")

    c_exported = set()
    cxx_exported = []
    for name in defined:
        if name.startswith("securememory_"):
            c_exported.add(name)
            if name not in declared:
                problems.append(f"C symbol {name} is exported but not declared in securememory.h")
        elif CXX_PUBLIC.match(name):
            text = demangled[name]
            if "securememory::detail::" in text.split("(")[0] and not text.startswith(ALLOWED_DETAIL):
                problems.append(f"internal symbol exported: {text} ({name}); hide it, or add it to ALLOWED_DETAIL "
                                "in test/abi/exported-symbols.py with the public header that needs it")
            cxx_exported.append(text)
        else:
            problems.append(f"exported outside the public API: {demangled[name]} ({name})")

    for name in sorted(declared - c_exported):
        problems.append(f"C function {name} is declared in securememory.h but not exported")

    for needed in REQUIRED:
        if not any(text.startswith(needed) for text in cxx_exported):
            problems.append(f"missing export: {needed}")

    # spdlog and fmt are private: neither linked nor imported.
    dynamic = run("readelf", "-d", library)
    for lib in re.findall(r"\(NEEDED\).*\[(.*)\]", dynamic):
        if lib.startswith(("libspdlog", "libfmt")):
            problems.append(f"links {lib}: spdlog and fmt must be compiled in (header-only, private)")
    undefined = [line.split()[-1] for line in run("nm", "-D", "--undefined-only", library).splitlines() if line.strip()]
    for name, text in zip(undefined, demangle(undefined)):
        if "spdlog" in text or "fmt::" in text:
            problems.append(f"imports {text}: spdlog and fmt must be compiled in (header-only, private)")

    print(f"exported-symbols: {len(defined)} symbols: {len(c_exported)} C functions, {len(cxx_exported)} C++ "
          f"(securememory::)")
    for problem in problems:
        print(f"exported-symbols: FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
