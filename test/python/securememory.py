"""securememory from Python, through the C API and the standard library's ctypes.

A starting point to copy into your project, not a packaged binding. It
covers factories, secrets (create, create_random, create_with, with_bytes,
close) and errors; add the other functions of securememory.h the same way.

    import securememory
    lib = securememory.load()                       # or load("/path/to/libsecurememory.so.1")
    factory = securememory.Factory(lib, "protectedmemory")
    key = bytearray(b"...")                         # bytearray: the library wipes it
    with factory.create(key) as secret:             # key is now all zeros
        fingerprint = secret.with_bytes(lambda view: hashlib.sha256(view).hexdigest()[:16])

Rules that matter in Python: read a secret only inside with_bytes, and copy
nothing out of the view (bytes(view), view.tobytes() and str() make copies
in ordinary memory that the garbage collector frees without wiping). The
view is released when the callback returns, so a kept reference raises
ValueError instead of touching no-access memory. Pass secrets in as
bytearray (bytes cannot be wiped), or better, never hold them in Python:
create_with fills the secret in place, create_random makes one.
"""
import ctypes
import ctypes.util

# int fn(const void* bytes, size_t size, void* context); fill takes void*.
_READ_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_FILL_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)

E_CLOSED, E_INVALID_SIZE, E_UNKNOWN_BACKEND, E_CALLBACK_FAILED = 1, 2, 6, 100


class SecureMemoryError(Exception):
    """A failed call: .code is the securememory_errc value; the text is the
    library's detail message (never secret bytes)."""

    def __init__(self, code, message):
        super().__init__(f"{message} (error {code})")
        self.code = code


def load(path=None):
    """Loads libsecurememory and declares the prototypes used below."""
    lib = ctypes.CDLL(path or ctypes.util.find_library("securememory") or "libsecurememory.so.1")
    p, size_t, c_int, c_char_p = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p
    pp = ctypes.POINTER(ctypes.c_void_p)
    for name, restype, argtypes in [
        ("securememory_factory_new", c_int, [c_char_p, pp]),
        ("securememory_factory_free", None, [p]),
        ("securememory_secret_create", c_int, [p, p, size_t, pp]),
        ("securememory_secret_create_random", c_int, [p, size_t, pp]),
        ("securememory_secret_create_with", c_int, [p, size_t, _FILL_FN, p, pp]),
        ("securememory_secret_with_bytes", c_int, [p, _READ_FN, p, ctypes.POINTER(c_int)]),
        ("securememory_secret_close", c_int, [p]),
        ("securememory_secret_free", None, [p]),
        ("securememory_secret_size", size_t, [p]),
        ("securememory_secret_is_closed", c_int, [p]),
        ("securememory_error_message", c_char_p, [c_int]),
        ("securememory_last_error_message", c_char_p, []),
        ("securememory_backend_count", size_t, []),
        ("securememory_backend_name", c_char_p, [size_t]),
    ]:
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _check(lib, code):
    if code != 0:
        raise SecureMemoryError(code, lib.securememory_last_error_message().decode())


def backend_names(lib):
    return [lib.securememory_backend_name(i).decode() for i in range(lib.securememory_backend_count())]


class Factory:
    """Makes secrets in one backend (None: the default)."""

    def __init__(self, lib, backend=None):
        self._lib, self._handle = lib, ctypes.c_void_p()
        _check(lib, lib.securememory_factory_new(backend.encode() if backend else None, ctypes.byref(self._handle)))

    def __del__(self):
        if getattr(self, "_handle", None):
            self._lib.securememory_factory_free(self._handle)

    def _make(self, call, *args):
        handle = ctypes.c_void_p()
        _check(self._lib, call(self._handle, *args, ctypes.byref(handle)))
        return Secret(self._lib, handle)

    def create(self, data):
        """Copies a bytearray into protected memory, then wipes the bytearray."""
        if not isinstance(data, bytearray):
            raise TypeError("pass a bytearray: bytes and str cannot be wiped")
        buffer = (ctypes.c_char * len(data)).from_buffer(data) if data else ctypes.create_string_buffer(1)
        return self._make(self._lib.securememory_secret_create, buffer, len(data))

    def create_random(self, size):
        return self._make(self._lib.securememory_secret_create_random, size)

    def create_with(self, size, fill):
        """fill(view) writes all `size` bytes of a writable memoryview; if it
        raises, the memory is wiped and released and the exception propagates."""
        failure = []

        def call(data, n, _context):
            view = memoryview((ctypes.c_char * n).from_address(data)).cast("B")
            try:
                fill(view)
                return 0
            except BaseException as e:  # reported after the library cleaned up
                failure.append(e)
                return 1
            finally:
                view.release()

        try:
            return self._make(self._lib.securememory_secret_create_with, size, _FILL_FN(call), None)
        except SecureMemoryError as e:
            if failure and e.code == E_CALLBACK_FAILED:
                raise failure[0] from None
            raise


class Secret:
    """A secret in protected memory. Use it as a context manager, or close()."""

    def __init__(self, lib, handle):
        self._lib, self._handle = lib, handle

    def with_bytes(self, fn):
        """Returns fn(view): view is a read-only memoryview of the secret,
        valid only during the call. An exception from fn propagates."""
        outcome = []

        def call(data, n, _context):
            view = memoryview((ctypes.c_char * n).from_address(data)).cast("B").toreadonly()
            try:
                outcome.append((True, fn(view)))
            except BaseException as e:
                outcome.append((False, e))
            finally:
                view.release()
            return 0

        _check(self._lib, self._lib.securememory_secret_with_bytes(self._handle, _READ_FN(call), None, None))
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    @property
    def size(self):
        return self._lib.securememory_secret_size(self._handle)

    @property
    def closed(self):
        return bool(self._lib.securememory_secret_is_closed(self._handle))

    def close(self):
        """Wipes and releases the secret now (the handle stays, closed)."""
        _check(self._lib, self._lib.securememory_secret_close(self._handle))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None):
            self._lib.securememory_secret_free(self._handle)  # closes if still open
            self._handle = None
