/* securememory: the C API, for C11 programs and for any language's FFI.
 *
 * A thin layer over the C++ API in the same shared library
 * (libsecurememory.so): the same secrets, backends, counters, violation
 * handling and log sink; see README.md and the C++ headers for what each
 * guarantee means. Handles are opaque pointers. Every function that can fail
 * returns 0 or a positive error code (securememory_errc): the numbers of
 * securememory::errc, plus two codes of the C API only. On failure,
 * securememory_last_error_message() says what happened and what to do
 * (never secret bytes). No C++ exception ever leaves a function of this API.
 *
 *     securememory_factory* f = NULL;
 *     securememory_secret* s = NULL;
 *     if (securememory_factory_new("protectedmemory", &f) != 0) { report(securememory_last_error_message()); }
 *     if (securememory_secret_create(f, key, sizeof key, &s) == 0) {     // key is now all zeros
 *       int r = 0;
 *       securememory_secret_with_bytes(s, use_key, NULL, &r);           // readable only inside use_key
 *       securememory_secret_free(s);                                    // wiped, unlocked, unmapped
 *     }
 *     securememory_factory_free(f);
 *
 * Thread-safety is that of the C++ API: every function may be called from
 * several threads at once, also on the same secret, except that freeing a
 * handle while another thread uses it is a use after free. Callbacks must
 * return normally (no longjmp out of them, and from C++ no exception: one
 * is caught and reported as SECUREMEMORY_E_CALLBACK_FAILED).
 *
 * Deliberately not in the C API (use the C++ API): custom backends and
 * registries, Reader (copying a secret out: use with_bytes), process
 * hardening (harden_process: setrlimit and prctl are one call away in any
 * language).
 */
#ifndef SECUREMEMORY_SECUREMEMORY_H
#define SECUREMEMORY_SECUREMEMORY_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SECUREMEMORY_C_API __attribute__((visibility("default")))
#else
#define SECUREMEMORY_C_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------- */

/* Return values. 1..13 are securememory::errc's values (same meaning). */
enum securememory_errc {
  SECUREMEMORY_OK = 0,
  SECUREMEMORY_E_CLOSED = 1,               /* the secret was closed (or belongs to the parent process) */
  SECUREMEMORY_E_INVALID_SIZE = 2,         /* size 0, or more than SECUREMEMORY_MAX_SECRET_SIZE */
  SECUREMEMORY_E_MEMLOCK_LIMIT = 3,        /* the kernel refused to lock the pages (RLIMIT_MEMLOCK) */
  SECUREMEMORY_E_OUT_OF_MEMORY = 4,        /* the kernel (or the heap) refused memory */
  SECUREMEMORY_E_PROTECTION_FAILED = 5,    /* mprotect/madvise (or a backend's equivalent) failed */
  SECUREMEMORY_E_UNKNOWN_BACKEND = 6,      /* no backend is registered under that name */
  SECUREMEMORY_E_DUPLICATE_BACKEND = 7,    /* (C++ register_backend only) */
  SECUREMEMORY_E_BACKEND_UNAVAILABLE = 8,  /* the backend cannot run on this host */
  SECUREMEMORY_E_REENTRANT_CLOSE = 9,      /* close from inside the same secret's with_bytes callback */
  SECUREMEMORY_E_INTEGRITY_VIOLATION = 10, /* memory next to the secret overwritten, or sealed data altered */
  SECUREMEMORY_E_RELEASE_FAILED = 11,      /* wiped, but unlocking or unmapping failed */
  SECUREMEMORY_E_INVALID_ARGUMENT = 12,    /* a NULL handle, callback or pointer, or a value out of range */
  SECUREMEMORY_E_READ_FAILED = 13,         /* reading from a file descriptor failed or ended early */
  /* C API only: */
  SECUREMEMORY_E_CALLBACK_FAILED = 100,    /* a fill callback returned non-zero, or a C++ callback threw */
  SECUREMEMORY_E_UNEXPECTED = 101          /* another exception reached the boundary (a C++ user backend's or sink's) */
};

/* A static English text for any code (also unknown ones); never NULL.
 * Thread-safe. */
SECUREMEMORY_C_API const char* securememory_error_message(int code);

/* The detail of this thread's last failure: which function, what happened
 * and what to do (e.g. the RLIMIT_MEMLOCK values and how to raise them).
 * "" before any failure. Set by every function of this API that fails
 * (the ones returning a size, a name or a flag: when an error, not the
 * answer, made them return 0 or NULL); left unchanged by successes. The
 * text stays valid until this thread's next failing call.
 * Never holds secret bytes: the text of an exception thrown by a callback
 * is not copied. Thread-safe (one message per thread). */
SECUREMEMORY_C_API const char* securememory_last_error_message(void);

/* ---- factories and secrets ---------------------------------------------- */

typedef struct securememory_factory securememory_factory;
typedef struct securememory_secret securememory_secret;

/* The largest secret in bytes (securememory::max_secret_size: 4 GiB - 1 MiB). */
#define SECUREMEMORY_MAX_SECRET_SIZE ((size_t)4294967296ULL - (size_t)1048576ULL)

/* Makes a factory for the named backend ("protectedmemory", "memguard",
 * "secretmem", "sealed", or one the C++ program registered); NULL or "": the
 * default (environment variable SECUREMEMORY_BACKEND, else
 * "protectedmemory"). Sets *out (NULL on failure). Returns 0,
 * E_UNKNOWN_BACKEND (the message lists the registered names),
 * E_BACKEND_UNAVAILABLE, E_OUT_OF_MEMORY, E_INVALID_ARGUMENT (out is NULL). */
SECUREMEMORY_C_API int securememory_factory_new(const char* backend, securememory_factory** out);

/* Frees a factory; NULL is a no-op. Secrets made with it stay usable. */
SECUREMEMORY_C_API void securememory_factory_free(securememory_factory* f);

/* The factory's backend name (a static string); "" for NULL. */
SECUREMEMORY_C_API const char* securememory_factory_backend(const securememory_factory* f);

/* Copies size bytes from `bytes` into protected memory, then wipes `bytes`
 * (all zeros). On failure `bytes` is untouched, *out is NULL and nothing is
 * held. Returns 0, E_INVALID_SIZE (0 or too large), E_OUT_OF_MEMORY,
 * E_MEMLOCK_LIMIT, E_PROTECTION_FAILED, E_INVALID_ARGUMENT (NULL f, bytes
 * or out). */
SECUREMEMORY_C_API int securememory_secret_create(securememory_factory* f, void* bytes, size_t size,
                                                  securememory_secret** out);

/* A secret of size bytes from the library's CSPRNG (ChaCha20, seeded from the
 * kernel), written directly into
 * protected memory. Returns like securememory_secret_create. */
SECUREMEMORY_C_API int securememory_secret_create_random(securememory_factory* f, size_t size,
                                                         securememory_secret** out);

/* A secret of size bytes written directly into protected memory by
 * fill(bytes, size, context): the memory is writable during that call only,
 * so the bytes never exist in memory of the caller's (decrypt or derive a
 * key straight into it). fill must write all size bytes and return 0. A
 * non-zero return aborts the creation: the memory is wiped and released,
 * nothing is held, *out is NULL, and E_CALLBACK_FAILED is returned (keep
 * your own reason in context). fill is not called when the size is invalid
 * or memory cannot be had. Returns like securememory_secret_create, or
 * E_CALLBACK_FAILED, E_INVALID_ARGUMENT (NULL f, fill or out). */
SECUREMEMORY_C_API int securememory_secret_create_with(securememory_factory* f, size_t size,
                                                       int (*fill)(void* bytes, size_t size, void* context),
                                                       void* context, securememory_secret** out);

/* A secret of exactly size bytes read from the file descriptor fd (a file,
 * pipe or socket; blocking) straight into protected memory; short reads and
 * EINTR are retried, nothing beyond size bytes is read. Returns like
 * securememory_secret_create, or E_READ_FAILED (read() failed, or the input
 * ended early: the bytes read so far are wiped, nothing is held). */
SECUREMEMORY_C_API int securememory_secret_create_from_fd(securememory_factory* f, int fd, size_t size,
                                                          securememory_secret** out);

/* Calls fn(bytes, size, context) with the secret's memory readable (read
 * only) for that call only, and stores fn's return value in *fn_result
 * (unless fn_result is NULL). The pointer is valid only during the call:
 * never keep it. Several threads may be inside at once; fn may read other
 * secrets, and may free this handle (the close then happens when fn
 * returns). Returns 0 (whatever fn returned), E_CLOSED, E_PROTECTION_FAILED,
 * E_INTEGRITY_VIOLATION (policy quarantine), E_CALLBACK_FAILED (a C++ fn
 * threw), E_INVALID_ARGUMENT (NULL s or fn). */
SECUREMEMORY_C_API int securememory_secret_with_bytes(securememory_secret* s,
                                                      int (*fn)(const void* bytes, size_t size, void* context),
                                                      void* context, int* fn_result);

/* Wipes, unlocks and unmaps the secret, after waiting for the with_bytes
 * calls in flight; the handle stays valid (closed) until freed. A second
 * close is a no-op (returns 0). Returns 0, E_REENTRANT_CLOSE (called inside
 * this secret's own callback: it stays open), E_PROTECTION_FAILED (could not
 * wipe) or E_RELEASE_FAILED (wiped, not released): closed all the same,
 * E_INTEGRITY_VIOLATION (policy quarantine), E_INVALID_ARGUMENT (NULL s). */
SECUREMEMORY_C_API int securememory_secret_close(securememory_secret* s);

/* Closes the secret if it is open and frees the handle; NULL is a no-op.
 * Never fails (a failure to close is logged and counted). */
SECUREMEMORY_C_API void securememory_secret_free(securememory_secret* s);

/* The size in bytes, also after close; 0 for NULL. */
SECUREMEMORY_C_API size_t securememory_secret_size(const securememory_secret* s);

/* 1 when closed (and for NULL), else 0. */
SECUREMEMORY_C_API int securememory_secret_is_closed(const securememory_secret* s);

/* The name of the backend holding the secret (a static string); "" for NULL. */
SECUREMEMORY_C_API const char* securememory_secret_backend(const securememory_secret* s);

/* Runs the backend's integrity check now (a no-op for backends without
 * one). On a violation: the handler, then the policy (abort, or quarantine
 * and E_INTEGRITY_VIOLATION). Returns 0, E_CLOSED, E_PROTECTION_FAILED,
 * E_INTEGRITY_VIOLATION, E_INVALID_ARGUMENT (NULL s). */
SECUREMEMORY_C_API int securememory_secret_verify(securememory_secret* s);

/* ---- backends ----------------------------------------------------------- */

/* The number of registered backends; 0 on failure. */
SECUREMEMORY_C_API size_t securememory_backend_count(void);

/* The name of the index-th registered backend in sorted order (a static
 * string, valid for the life of the process); NULL when index >= the
 * count. A backend registered concurrently (from C++) shifts the indexes. */
SECUREMEMORY_C_API const char* securememory_backend_name(size_t index);

/* 1 when the backend is registered and can run on this host, else 0 (also
 * for NULL and on failure). */
SECUREMEMORY_C_API int securememory_backend_available(const char* name);

/* ---- integrity violations ----------------------------------------------- */

enum securememory_violation_check {
  SECUREMEMORY_CHECK_ON_OPEN = 0,   /* when the secret was opened for reading */
  SECUREMEMORY_CHECK_ON_CLOSE = 1,  /* when it was closed */
  SECUREMEMORY_CHECK_ON_VERIFY = 2  /* an explicit securememory_secret_verify */
};

enum securememory_violation_kind {
  SECUREMEMORY_VIOLATION_CANARY_OVERWRITTEN = 0,    /* memory in front of the secret was overwritten (memguard) */
  SECUREMEMORY_VIOLATION_AUTHENTICATION_FAILED = 1  /* a sealed secret's ciphertext was altered */
};

/* A violation, as the handler sees it (never the secret's bytes). */
typedef struct securememory_violation {
  const char* backend; /* backend name, valid during the call */
  size_t size;         /* the secret's size in bytes */
  int check;           /* enum securememory_violation_check */
  int kind;            /* enum securememory_violation_kind */
} securememory_violation;

typedef void (*securememory_violation_fn)(const securememory_violation* violation, void* context);

/* Installs the process-wide violation handler (called once per corrupted
 * secret, on the thread that found it, with that secret's lock held: it must
 * not use that secret); NULL restores the default (which logs). Replaces a
 * handler installed through the C++ API too. Returns 0 or
 * E_OUT_OF_MEMORY. */
SECUREMEMORY_C_API int securememory_set_violation_handler(securememory_violation_fn fn, void* context);

enum securememory_violation_policy {
  SECUREMEMORY_POLICY_ABORT = 0,      /* abort() after the handler (default) */
  SECUREMEMORY_POLICY_QUARANTINE = 1  /* wipe, keep the pages mapped no-access, close, E_INTEGRITY_VIOLATION */
};

/* Sets the process-wide policy; stores the previous one in *previous unless
 * it is NULL. Returns 0 or E_INVALID_ARGUMENT (not a policy). */
SECUREMEMORY_C_API int securememory_set_violation_policy(int policy, int* previous);

/* ---- counters and the page cache ---------------------------------------- */

/* securememory::metrics_snapshot. Fields may be added at the end. */
typedef struct securememory_metrics {
  uint64_t allocated;    /* secrets ever created successfully */
  uint64_t in_use;       /* created and not yet closed */
  uint64_t locked_bytes; /* locked bytes the live secrets hold */
  uint64_t failures;     /* failed allocations, protections and releases */
  uint64_t violations;   /* integrity violations found */
  uint64_t cached_bytes; /* locked, wiped bytes kept by the page cache */
  uint64_t internal_locked_bytes; /* locked bytes the library holds for itself (sealed's key and
                                   * scratch, unused secretmem arena pages, the
                                   * random generator's page); the three together are
                                   * what counts against RLIMIT_MEMLOCK */
} securememory_metrics;

/* Fills the first `size` bytes of *out (pass sizeof(securememory_metrics):
 * a program built against an older, shorter struct gets only its fields).
 * Returns 0 or E_INVALID_ARGUMENT (NULL out, size 0). */
SECUREMEMORY_C_API int securememory_get_metrics(securememory_metrics* out, size_t size);

/* The page cache's bound in bytes (0: disabled); see page_cache.hpp. */
SECUREMEMORY_C_API size_t securememory_page_cache_limit(void);

/* Sets the bound (0 disables the cache; set it before hibernating) and
 * returns the previous one. Never fails. */
SECUREMEMORY_C_API size_t securememory_set_page_cache_limit(size_t bytes);

/* ---- logging ------------------------------------------------------------ */

enum securememory_log_level {
  SECUREMEMORY_LOG_TRACE = 0,
  SECUREMEMORY_LOG_DEBUG = 1,
  SECUREMEMORY_LOG_INFO = 2,
  SECUREMEMORY_LOG_WARN = 3,
  SECUREMEMORY_LOG_ERROR = 4,
  SECUREMEMORY_LOG_CRITICAL = 5,
  SECUREMEMORY_LOG_OFF = 6 /* as a threshold only */
};

/* Receives one message: its level, its text (NUL-terminated, length bytes,
 * valid during the call only; never secret bytes), and the context given
 * to securememory_set_log_sink. May be called from any thread, several at
 * once, and during exit. */
typedef void (*securememory_log_fn)(int level, const char* message, size_t length, void* context);

/* Sends the library's messages to fn (replacing any sink, also one set
 * through the C++ API); NULL restores the default (stderr). Returns 0 or
 * E_OUT_OF_MEMORY. */
SECUREMEMORY_C_API int securememory_set_log_sink(securememory_log_fn fn, void* context);

/* Sets the threshold (messages below it are dropped; default
 * SECUREMEMORY_LOG_WARN); stores the previous one in *previous unless it is
 * NULL. Returns 0 or E_INVALID_ARGUMENT (not a level). */
SECUREMEMORY_C_API int securememory_set_log_level(int level, int* previous);

/* The threshold in force. */
SECUREMEMORY_C_API int securememory_get_log_level(void);

#ifdef __cplusplus
}
#endif

#endif /* SECUREMEMORY_SECUREMEMORY_H */
