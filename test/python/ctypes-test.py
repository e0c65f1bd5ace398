#!/usr/bin/env python3
"""The C API from a language runtime: Python's ctypes (standard library only)
loads the built libsecurememory.so through test/python/securememory.py, the
starting point offered to users, and uses it. Prints TAP, one line per case.

Usage: ctypes-test.py LIBSECUREMEMORY_SO

In a sanitizer build the library needs its sanitizer runtime loaded first:
the script then runs itself again with that runtime in LD_PRELOAD (and leak
detection off: the interpreter keeps memory until exit on purpose).
"""
import os
import re
import subprocess
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def preload_sanitizer_runtime(library):
    """Re-executes under LD_PRELOAD when the library links a sanitizer runtime."""
    if os.environ.get("SECUREMEMORY_CTYPES_PRELOADED"):
        return
    ldd = subprocess.run(["ldd", library], capture_output=True, text=True, check=True).stdout
    runtimes = re.findall(r"\s(lib(?:asan|tsan|ubsan)\.so\S*) => (\S+)", ldd)
    if not runtimes:
        return
    env = dict(os.environ, SECUREMEMORY_CTYPES_PRELOADED="1")
    env["LD_PRELOAD"] = ":".join(path for _, path in runtimes)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"  # the last setting wins
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def main():
    library = os.path.abspath(sys.argv[1])
    preload_sanitizer_runtime(library)
    import securememory as sm

    lib = sm.load(library)
    cases = []

    def case(function):
        cases.append(function)
        return function

    @case
    def create_wipes_the_source_and_reads_inside_a_callback():
        key = bytearray(range(0x80, 0xA0))
        expected = bytes(key)
        factory = sm.Factory(lib, "protectedmemory")
        secret = factory.create(key)
        assert key == bytearray(len(expected)), "the bytearray is wiped"
        assert secret.size == 32 and not secret.closed
        assert secret.with_bytes(lambda view: view.readonly and bytes(view) == expected)
        secret.close()
        assert secret.closed and secret.size == 32

    @case
    def every_backend_round_trips():
        names = sm.backend_names(lib)
        assert "protectedmemory" in names and names == sorted(names)
        for name in names:
            try:
                factory = sm.Factory(lib, name)
            except sm.SecureMemoryError as e:
                print(f"# {name}: {e}")
                continue
            with factory.create_random(16) as secret:
                assert secret.with_bytes(len) == 16

    @case
    def a_closed_secret_raises_closed():
        secret = sm.Factory(lib).create_random(8)
        secret.close()
        secret.close()  # a second close is a no-op
        try:
            secret.with_bytes(len)
        except sm.SecureMemoryError as e:
            assert e.code == sm.E_CLOSED, e
            assert "securememory_secret_with_bytes" in str(e)
        else:
            raise AssertionError("no error after close")

    @case
    def errors_carry_codes_and_messages():
        try:
            sm.Factory(lib, "no-such-backend")
        except sm.SecureMemoryError as e:
            assert e.code == sm.E_UNKNOWN_BACKEND and "protectedmemory" in str(e), e
        else:
            raise AssertionError("unknown backend accepted")
        factory = sm.Factory(lib)
        for make in (lambda: factory.create_random(0), lambda: factory.create(bytearray())):
            try:
                make()
            except sm.SecureMemoryError as e:
                assert e.code == sm.E_INVALID_SIZE, e
            else:
                raise AssertionError("size 0 accepted")
        try:
            factory.create(b"immutable")
        except TypeError:
            pass
        else:
            raise AssertionError("bytes accepted (they cannot be wiped)")
        assert lib.securememory_error_message(sm.E_CLOSED) == b"secret is closed"

    @case
    def create_with_fills_in_place_and_a_failing_fill_holds_nothing():
        factory = sm.Factory(lib)

        def fill(view):
            view[:] = bytes(range(0x90, 0x90 + len(view)))

        with factory.create_with(12, fill) as secret:
            assert secret.with_bytes(bytes) == bytes(range(0x90, 0x9C))

        class Refused(Exception):
            pass

        def refuse(view):
            raise Refused("no key today")

        try:
            factory.create_with(12, refuse)
        except Refused:
            pass  # the Python exception comes back, after the library wiped and released
        else:
            raise AssertionError("fill's exception lost")

    @case
    def a_callback_exception_propagates_and_the_view_dies_with_the_call():
        secret = sm.Factory(lib).create_random(8)
        kept = []
        try:
            secret.with_bytes(lambda view: kept.append(view) or 1 / 0)
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("the callback's exception was lost")
        try:
            kept[0][0]
        except ValueError:
            pass  # released: no read of no-access memory
        else:
            raise AssertionError("a kept view still reads the secret")
        assert secret.with_bytes(len) == 8  # the secret is intact and closed again after the exception
        secret.close()

    failed = 0
    for number, function in enumerate(cases, 1):
        try:
            function()
            print(f"ok {number} - {function.__name__}")
        except Exception:  # report and go on
            failed += 1
            print(f"not ok {number} - {function.__name__}")
            for line in traceback.format_exc().splitlines():
                print(f"# {line}")
        sys.stdout.flush()
    print(f"1..{len(cases)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
