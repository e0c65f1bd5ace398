/* The C API (include/securememory/securememory.h) from a C11 program linked
 * against the shared libsecurememory.so, as an external user would build it
 * (C11, -Wall -Wextra -Werror -pedantic). Every function is called, with its
 * error paths: unknown backend, size 0 and too large, closed secrets, NULL
 * arguments, failing callbacks, a corrupted canary. Prints TAP, one line per
 * case. Secret bytes are all >= 0x80, so any text that is pure ASCII held
 * none of them. */
#define _POSIX_C_SOURCE 200809L

#include <securememory/securememory.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int failures_in_case;
static int cases;
static int failed_cases;

#define CHECK(cond)                                                                         \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      printf("# FAILED at %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,         \
             securememory_last_error_message());                                            \
      ++failures_in_case;                                                                   \
    }                                                                                       \
  } while (0)

static void run(const char* name, void (*body)(void)) {
  failures_in_case = 0;
  body();
  ++cases;
  if (failures_in_case != 0) ++failed_cases;
  printf("%s %d - %s\n", failures_in_case == 0 ? "ok" : "not ok", cases, name);
  fflush(stdout);
}

static int ascii(const char* text) {
  for (; *text != '\0'; ++text) {
    if ((unsigned char)*text >= 0x80U) return 0;
  }
  return 1;
}

static void fill_pattern(unsigned char* bytes, size_t size, unsigned seed) {
  for (size_t i = 0; i < size; ++i) bytes[i] = (unsigned char)(0x80U | ((seed + i * 7U) & 0x7FU));
}

static int all_zero(const unsigned char* bytes, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    if (bytes[i] != 0) return 0;
  }
  return 1;
}

static uint64_t in_use(void) {
  securememory_metrics m;
  memset(&m, 0, sizeof m);
  return securememory_get_metrics(&m, sizeof m) == 0 ? m.in_use : UINT64_MAX;
}

/* ---- callbacks ------------------------------------------------------------ */

struct expected {
  const unsigned char* bytes;
  size_t size;
};

/* Returns 1 when the secret holds exactly the expected bytes. */
static int equals(const void* bytes, size_t size, void* context) {
  const struct expected* e = context;
  return size == e->size && memcmp(bytes, e->bytes, size) == 0 ? 1 : 0;
}

static int size_of(const void* bytes, size_t size, void* context) {
  (void)bytes;
  (void)context;
  return (int)size;
}

static int fill_with_pattern(void* bytes, size_t size, void* context) {
  ++*(int*)context;
  fill_pattern(bytes, size, 5);
  return 0;
}

static int fill_fails(void* bytes, size_t size, void* context) {
  ++*(int*)context;
  memset(bytes, 0xAB, size / 2); /* half written, then a failure */
  return 7;
}

static int close_own(const void* bytes, size_t size, void* context) {
  (void)bytes;
  (void)size;
  return securememory_secret_close(context);
}

static int free_own(const void* bytes, size_t size, void* context) {
  (void)bytes;
  (void)size;
  securememory_secret_free(context); /* the close happens when this returns */
  return 1;
}

struct nested {
  securememory_secret* other;
  int inner;
};

static int read_other(const void* bytes, size_t size, void* context) {
  struct nested* n = context;
  (void)bytes;
  (void)size;
  return securememory_secret_with_bytes(n->other, size_of, NULL, &n->inner);
}

static const void* kept_pointer;
static int keep_pointer(const void* bytes, size_t size, void* context) {
  (void)size;
  (void)context;
  kept_pointer = bytes; /* only to corrupt the canary on purpose below */
  return 0;
}

struct log_record {
  int calls;
  int level;
  int all_ascii;
  char last[512];
};

static void record_log(int level, const char* message, size_t length, void* context) {
  struct log_record* r = context;
  ++r->calls;
  r->level = level;
  if (!ascii(message) || strlen(message) != length) r->all_ascii = 0;
  snprintf(r->last, sizeof r->last, "%s", message);
}

struct violation_record {
  int calls;
  char backend[32];
  size_t size;
  int check;
  int kind;
};

static void record_violation(const securememory_violation* v, void* context) {
  struct violation_record* r = context;
  ++r->calls;
  snprintf(r->backend, sizeof r->backend, "%s", v->backend);
  r->size = v->size;
  r->check = v->check;
  r->kind = v->kind;
}

static struct log_record startup_log = {0, -1, 1, ""};

/* ---- cases ---------------------------------------------------------------- */

static void error_codes_and_messages(void) {
  CHECK(strcmp(securememory_last_error_message(), "") == 0); /* no failure yet on this thread */
  CHECK(strcmp(securememory_error_message(SECUREMEMORY_OK), "success") == 0);
  const char* unknown = securememory_error_message(9999);
  CHECK(unknown != NULL && strstr(unknown, "unknown") != NULL);
  CHECK(securememory_error_message(-1) == unknown);
  /* Every errc has a C constant: the code after the last one is unknown to the
   * library (this fails when errc grows and the header does not). */
  for (int code = SECUREMEMORY_E_CLOSED; code <= SECUREMEMORY_E_READ_FAILED; ++code) {
    CHECK(securememory_error_message(code) != unknown);
    CHECK(securememory_error_message(code) == securememory_error_message(code)); /* static */
  }
  CHECK(securememory_error_message(SECUREMEMORY_E_READ_FAILED + 1) == unknown);
  CHECK(strstr(securememory_error_message(SECUREMEMORY_E_INVALID_SIZE), "size") != NULL);
  CHECK(strstr(securememory_error_message(SECUREMEMORY_E_CALLBACK_FAILED), "callback") != NULL);
  CHECK(strstr(securememory_error_message(SECUREMEMORY_E_UNEXPECTED), "unexpected") != NULL);
  CHECK(SECUREMEMORY_MAX_SECRET_SIZE == (size_t)4294967296ULL - (size_t)1048576ULL);
}

static void startup_log_went_to_the_sink(void) {
  /* main() set SECUREMEMORY_PAGE_CACHE to garbage and a sink before the
   * library read it: the warning came here, not to stderr. */
  CHECK(startup_log.calls == 1);
  CHECK(startup_log.level == SECUREMEMORY_LOG_WARN);
  CHECK(strstr(startup_log.last, "SECUREMEMORY_PAGE_CACHE") != NULL);
  CHECK(startup_log.all_ascii);
  CHECK(securememory_set_log_sink(NULL, NULL) == 0); /* the default again */
}

static void factories(void) {
  securememory_factory* f = (securememory_factory*)&f; /* not NULL: must be reset */
  CHECK(securememory_factory_new(NULL, &f) == 0);
  const char* env = getenv("SECUREMEMORY_BACKEND");
  const char* expected = env != NULL && *env != '\0' ? env : "protectedmemory";
  CHECK(f != NULL && strcmp(securememory_factory_backend(f), expected) == 0);
  securememory_factory_free(f);
  CHECK(securememory_factory_new("", &f) == 0);
  CHECK(f != NULL && strcmp(securememory_factory_backend(f), expected) == 0);
  securememory_factory_free(f);
  CHECK(securememory_factory_new("memguard", &f) == 0);
  CHECK(strcmp(securememory_factory_backend(f), "memguard") == 0);
  securememory_factory_free(f);

  f = (securememory_factory*)&f;
  CHECK(securememory_factory_new("no-such-backend", &f) == SECUREMEMORY_E_UNKNOWN_BACKEND);
  CHECK(f == NULL);
  CHECK(strstr(securememory_last_error_message(), "securememory_factory_new") != NULL);
  CHECK(strstr(securememory_last_error_message(), "no-such-backend") != NULL);
  CHECK(strstr(securememory_last_error_message(), "protectedmemory") != NULL); /* lists the known ones */
  CHECK(securememory_factory_new("protectedmemory", NULL) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(strcmp(securememory_factory_backend(NULL), "") == 0);
  securememory_factory_free(NULL);
}

static void round_trip_on_every_backend(void) {
  const size_t count = securememory_backend_count();
  int tested = 0;
  for (size_t i = 0; i < count; ++i) {
    const char* name = securememory_backend_name(i);
    if (!securememory_backend_available(name)) {
      printf("# %s is not available here\n", name);
      continue;
    }
    ++tested;
    securememory_factory* f = NULL;
    CHECK(securememory_factory_new(name, &f) == 0);
    unsigned char key[48];
    unsigned char copy[48];
    fill_pattern(key, sizeof key, (unsigned)i);
    memcpy(copy, key, sizeof key);
    const uint64_t before = in_use();
    securememory_secret* s = NULL;
    CHECK(securememory_secret_create(f, key, sizeof key, &s) == 0);
    CHECK(all_zero(key, sizeof key)); /* the source is wiped */
    CHECK(in_use() == before + 1);
    CHECK(securememory_secret_size(s) == sizeof key);
    CHECK(securememory_secret_is_closed(s) == 0);
    CHECK(strcmp(securememory_secret_backend(s), name) == 0);
    CHECK(securememory_secret_verify(s) == 0);
    struct expected e = {copy, sizeof copy};
    int result = -1;
    CHECK(securememory_secret_with_bytes(s, equals, &e, &result) == 0);
    CHECK(result == 1);
    CHECK(securememory_secret_with_bytes(s, equals, &e, NULL) == 0); /* fn_result may be NULL */

    CHECK(securememory_secret_close(s) == 0);
    CHECK(securememory_secret_is_closed(s) == 1);
    CHECK(securememory_secret_size(s) == sizeof key); /* also after close */
    CHECK(securememory_secret_close(s) == 0);         /* a second close is a no-op */
    CHECK(in_use() == before);
    result = -1;
    CHECK(securememory_secret_with_bytes(s, equals, &e, &result) == SECUREMEMORY_E_CLOSED);
    CHECK(result == -1);
    CHECK(strstr(securememory_last_error_message(), "securememory_secret_with_bytes") != NULL);
    CHECK(ascii(securememory_last_error_message()));
    CHECK(securememory_secret_verify(s) == SECUREMEMORY_E_CLOSED);
    securememory_secret_free(s);
    securememory_factory_free(f);
  }
  CHECK(tested >= 2); /* protectedmemory and memguard run everywhere */
}

static void create_refuses_bad_input(void) {
  securememory_factory* f = NULL;
  CHECK(securememory_factory_new("protectedmemory", &f) == 0);
  unsigned char key[16];
  fill_pattern(key, sizeof key, 1);
  const uint64_t before = in_use();
  securememory_secret* s = (securememory_secret*)&s;
  CHECK(securememory_secret_create(f, key, 0, &s) == SECUREMEMORY_E_INVALID_SIZE);
  CHECK(s == NULL);
  CHECK(key[0] != 0); /* untouched on failure */
  CHECK(strstr(securememory_last_error_message(), "size") != NULL);
  CHECK(securememory_secret_create(f, key, SECUREMEMORY_MAX_SECRET_SIZE + 1, &s) == SECUREMEMORY_E_INVALID_SIZE);
  CHECK(key[0] != 0);
  CHECK(securememory_secret_create(NULL, key, sizeof key, &s) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_secret_create(f, NULL, sizeof key, &s) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(s == NULL);
  CHECK(securememory_secret_create(f, key, sizeof key, NULL) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(key[0] != 0);
  CHECK(in_use() == before);

  CHECK(securememory_secret_create_random(f, 0, &s) == SECUREMEMORY_E_INVALID_SIZE);
  CHECK(securememory_secret_create_random(NULL, 32, &s) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_secret_create_random(f, 32, NULL) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_secret_create_random(f, 32, &s) == 0);
  int size = 0;
  CHECK(securememory_secret_with_bytes(s, size_of, NULL, &size) == 0);
  CHECK(size == 32);
  securememory_secret_free(s); /* closes: never fails */
  CHECK(in_use() == before);
  securememory_factory_free(f);
}

static void create_with_fill(void) {
  securememory_factory* f = NULL;
  CHECK(securememory_factory_new("protectedmemory", &f) == 0);
  const uint64_t before = in_use();
  int calls = 0;
  securememory_secret* s = NULL;
  CHECK(securememory_secret_create_with(f, 24, fill_with_pattern, &calls, &s) == 0);
  CHECK(calls == 1);
  unsigned char expected_bytes[24];
  fill_pattern(expected_bytes, sizeof expected_bytes, 5);
  struct expected e = {expected_bytes, sizeof expected_bytes};
  int result = 0;
  CHECK(securememory_secret_with_bytes(s, equals, &e, &result) == 0 && result == 1);
  securememory_secret_free(s);

  /* A non-zero return aborts: wiped, released, nothing held. */
  calls = 0;
  s = (securememory_secret*)&s;
  CHECK(securememory_secret_create_with(f, 24, fill_fails, &calls, &s) == SECUREMEMORY_E_CALLBACK_FAILED);
  CHECK(calls == 1);
  CHECK(s == NULL);
  CHECK(in_use() == before);
  CHECK(strstr(securememory_last_error_message(), "returned 7") != NULL);

  calls = 0;
  CHECK(securememory_secret_create_with(f, 0, fill_with_pattern, &calls, &s) == SECUREMEMORY_E_INVALID_SIZE);
  CHECK(calls == 0); /* not called for an invalid size */
  CHECK(securememory_secret_create_with(f, 24, NULL, NULL, &s) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_secret_create_with(NULL, 24, fill_with_pattern, &calls, &s) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_secret_create_with(f, 24, fill_with_pattern, &calls, NULL) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(calls == 0);
  CHECK(in_use() == before);
  securememory_factory_free(f);
}

static void create_from_a_descriptor(void) {
  securememory_factory* f = NULL;
  CHECK(securememory_factory_new("protectedmemory", &f) == 0);
  const uint64_t before = in_use();
  unsigned char key[32];
  fill_pattern(key, sizeof key, 9);
  int fds[2];
  CHECK(pipe(fds) == 0);
  CHECK(write(fds[1], key, sizeof key) == (ssize_t)sizeof key);
  securememory_secret* s = NULL;
  CHECK(securememory_secret_create_from_fd(f, fds[0], sizeof key, &s) == 0);
  struct expected e = {key, sizeof key};
  int result = 0;
  CHECK(securememory_secret_with_bytes(s, equals, &e, &result) == 0 && result == 1);
  securememory_secret_free(s);

  /* The input ends early: read_failed, nothing held. */
  CHECK(write(fds[1], key, 8) == 8);
  close(fds[1]);
  s = (securememory_secret*)&s;
  CHECK(securememory_secret_create_from_fd(f, fds[0], sizeof key, &s) == SECUREMEMORY_E_READ_FAILED);
  CHECK(s == NULL);
  close(fds[0]);
  CHECK(securememory_secret_create_from_fd(f, -1, sizeof key, &s) == SECUREMEMORY_E_READ_FAILED);
  CHECK(securememory_secret_create_from_fd(NULL, 0, sizeof key, &s) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(in_use() == before);
  securememory_factory_free(f);
}

static void with_bytes_rules(void) {
  securememory_factory* f = NULL;
  CHECK(securememory_factory_new("protectedmemory", &f) == 0);
  securememory_secret* s = NULL;
  securememory_secret* other = NULL;
  CHECK(securememory_secret_create_random(f, 16, &s) == 0);
  CHECK(securememory_secret_create_random(f, 8, &other) == 0);
  int result = 0;
  CHECK(securememory_secret_with_bytes(NULL, size_of, NULL, &result) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_secret_with_bytes(s, NULL, NULL, &result) == SECUREMEMORY_E_INVALID_ARGUMENT);

  /* Another secret may be read inside the callback. */
  struct nested n = {other, 0};
  CHECK(securememory_secret_with_bytes(s, read_other, &n, &result) == 0);
  CHECK(result == 0 && n.inner == 8);

  /* Closing a secret inside its own callback is refused; it stays open. */
  CHECK(securememory_secret_with_bytes(s, close_own, s, &result) == 0);
  CHECK(result == SECUREMEMORY_E_REENTRANT_CLOSE);
  CHECK(securememory_secret_is_closed(s) == 0);

  /* Freeing the handle inside its own callback: closed once the callback returns. */
  const uint64_t before = in_use();
  CHECK(securememory_secret_with_bytes(s, free_own, s, &result) == 0);
  CHECK(result == 1);
  CHECK(in_use() == before - 1);

  /* NULL handles. */
  CHECK(securememory_secret_close(NULL) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_secret_verify(NULL) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_secret_size(NULL) == 0);
  CHECK(securememory_secret_is_closed(NULL) == 1);
  CHECK(strcmp(securememory_secret_backend(NULL), "") == 0);
  securememory_secret_free(NULL);
  securememory_secret_free(other);
  securememory_factory_free(f);
}

static void backend_names_and_availability(void) {
  const size_t count = securememory_backend_count();
  CHECK(count >= 3 + SECUREMEMORY_HAVE_SECRETMEM); /* secretmem: Linux only, not with posix_only */
  int has_protectedmemory = 0;
  for (size_t i = 0; i < count; ++i) {
    const char* name = securememory_backend_name(i);
    CHECK(name != NULL);
    if (name == NULL) continue;
    if (strcmp(name, "protectedmemory") == 0) has_protectedmemory = 1;
    if (i > 0) CHECK(strcmp(securememory_backend_name(i - 1), name) < 0); /* sorted */
    CHECK(securememory_backend_name(i) == name);                           /* the same static string */
  }
  CHECK(has_protectedmemory);
  CHECK(securememory_backend_name(count) == NULL);
  CHECK(securememory_backend_available("protectedmemory") == 1);
  CHECK(securememory_backend_available("memguard") == 1);
  CHECK(securememory_backend_available("no-such-backend") == 0);
  CHECK(securememory_backend_available("") == 0);
  CHECK(securememory_backend_available(NULL) == 0);
}

static void metrics_and_page_cache(void) {
  securememory_metrics m;
  memset(&m, 0, sizeof m);
  CHECK(securememory_get_metrics(&m, sizeof m) == 0);
  securememory_factory* f = NULL;
  CHECK(securememory_factory_new("protectedmemory", &f) == 0);
  securememory_secret* s = NULL;
  CHECK(securememory_secret_create_random(f, 16, &s) == 0);
  securememory_metrics after;
  CHECK(securememory_get_metrics(&after, sizeof after) == 0);
  CHECK(after.allocated == m.allocated + 1);
  CHECK(after.in_use == m.in_use + 1);
  CHECK(after.locked_bytes > m.locked_bytes);
  securememory_secret_free(s);

  /* A caller built against a shorter struct gets only its fields. */
  securememory_metrics partial;
  memset(&partial, 0xEE, sizeof partial);
  CHECK(securememory_get_metrics(&partial, 2 * sizeof(uint64_t)) == 0);
  CHECK(partial.allocated == after.allocated);
  CHECK(partial.locked_bytes == UINT64_C(0xEEEEEEEEEEEEEEEE)); /* not written */
  CHECK(securememory_get_metrics(NULL, sizeof m) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_get_metrics(&m, 0) == SECUREMEMORY_E_INVALID_ARGUMENT);

  const size_t limit = securememory_page_cache_limit();
  CHECK(securememory_set_page_cache_limit(0) == limit);
  CHECK(securememory_page_cache_limit() == 0);
  CHECK(securememory_secret_create_random(f, 16, &s) == 0);
  securememory_secret_free(s);
  CHECK(securememory_get_metrics(&m, sizeof m) == 0);
  CHECK(m.cached_bytes == 0); /* nothing cached while disabled */
  /* sealed's key and scratch are the library's own locked memory. */
  if (securememory_backend_available("sealed")) {
    securememory_factory* sealed = NULL;
    CHECK(securememory_factory_new("sealed", &sealed) == 0);
    CHECK(securememory_secret_create_random(sealed, 16, &s) == 0);
    CHECK(securememory_get_metrics(&m, sizeof m) == 0);
    CHECK(m.internal_locked_bytes > 0);
    securememory_secret_free(s);
    securememory_factory_free(sealed);
  }
  CHECK(securememory_set_page_cache_limit(limit) == 0);
  securememory_factory_free(f);
}

static void log_level_threshold(void) {
  int previous = -1;
  CHECK(securememory_get_log_level() == SECUREMEMORY_LOG_WARN);
  CHECK(securememory_set_log_level(SECUREMEMORY_LOG_ERROR, &previous) == 0);
  CHECK(previous == SECUREMEMORY_LOG_WARN);
  CHECK(securememory_get_log_level() == SECUREMEMORY_LOG_ERROR);
  CHECK(securememory_set_log_level(SECUREMEMORY_LOG_OFF + 1, &previous) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_set_log_level(-1, NULL) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_get_log_level() == SECUREMEMORY_LOG_ERROR);
  CHECK(securememory_set_log_level(SECUREMEMORY_LOG_WARN, NULL) == 0);
}

/* Flips the byte in front of a memguard secret's data (its canary), as a
 * stray write elsewhere in the process would, and returns the secret. */
static securememory_secret* corrupted_memguard_secret(securememory_factory* f) {
  securememory_secret* s = NULL;
  if (securememory_secret_create_random(f, 16, &s) != 0) return NULL;
  kept_pointer = NULL;
  securememory_secret_with_bytes(s, keep_pointer, NULL, NULL);
  unsigned char* data = (unsigned char*)(uintptr_t)kept_pointer;
  const uintptr_t page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
  void* page = (void*)(((uintptr_t)(data - 1)) & ~(page_size - 1));
  if (mprotect(page, page_size, PROT_READ | PROT_WRITE) != 0) return NULL;
  data[-1] ^= 0xFFU;
  if (mprotect(page, page_size, PROT_NONE) != 0) return NULL;
  return s;
}

static void violations(void) {
  int previous = -1;
  CHECK(securememory_set_violation_policy(SECUREMEMORY_POLICY_QUARANTINE, &previous) == 0);
  CHECK(previous == SECUREMEMORY_POLICY_ABORT);
  CHECK(securememory_set_violation_policy(2, &previous) == SECUREMEMORY_E_INVALID_ARGUMENT);
  CHECK(securememory_set_violation_policy(-1, NULL) == SECUREMEMORY_E_INVALID_ARGUMENT);

  struct violation_record seen = {0, "", 0, -1, -1};
  CHECK(securememory_set_violation_handler(record_violation, &seen) == 0);
  securememory_metrics before;
  CHECK(securememory_get_metrics(&before, sizeof before) == 0);
  securememory_factory* f = NULL;
  CHECK(securememory_factory_new("memguard", &f) == 0);
  securememory_secret* s = corrupted_memguard_secret(f);
  CHECK(s != NULL);
  int result = 0;
  CHECK(securememory_secret_with_bytes(s, size_of, NULL, &result) == SECUREMEMORY_E_INTEGRITY_VIOLATION);
  CHECK(seen.calls == 1);
  CHECK(strcmp(seen.backend, "memguard") == 0);
  CHECK(seen.size == 16);
  CHECK(seen.check == SECUREMEMORY_CHECK_ON_OPEN);
  CHECK(seen.kind == SECUREMEMORY_VIOLATION_CANARY_OVERWRITTEN);
  CHECK(securememory_secret_is_closed(s) == 1); /* quarantined */
  securememory_secret_free(s);
  securememory_metrics after;
  CHECK(securememory_get_metrics(&after, sizeof after) == 0);
  CHECK(after.violations == before.violations + 1);

  /* verify() finds it too. */
  s = corrupted_memguard_secret(f);
  CHECK(s != NULL);
  CHECK(securememory_secret_verify(s) == SECUREMEMORY_E_INTEGRITY_VIOLATION);
  CHECK(seen.calls == 2 && seen.check == SECUREMEMORY_CHECK_ON_VERIFY);
  securememory_secret_free(s);

  /* The default handler logs the violation at level critical, through the sink,
   * and the threshold silences it. */
  CHECK(securememory_set_violation_handler(NULL, NULL) == 0);
  struct log_record log = {0, -1, 1, ""};
  CHECK(securememory_set_log_sink(record_log, &log) == 0);
  s = corrupted_memguard_secret(f);
  CHECK(securememory_secret_verify(s) == SECUREMEMORY_E_INTEGRITY_VIOLATION);
  securememory_secret_free(s);
  CHECK(seen.calls == 2); /* ours is no longer installed */
  CHECK(log.calls == 1);
  CHECK(log.level == SECUREMEMORY_LOG_CRITICAL);
  CHECK(strstr(log.last, "memguard") != NULL);
  CHECK(log.all_ascii);
  CHECK(securememory_set_log_level(SECUREMEMORY_LOG_OFF, NULL) == 0);
  s = corrupted_memguard_secret(f);
  CHECK(securememory_secret_verify(s) == SECUREMEMORY_E_INTEGRITY_VIOLATION);
  securememory_secret_free(s);
  CHECK(log.calls == 1);
  CHECK(securememory_set_log_level(SECUREMEMORY_LOG_WARN, NULL) == 0);
  CHECK(securememory_set_log_sink(NULL, NULL) == 0);

  CHECK(securememory_set_violation_policy(SECUREMEMORY_POLICY_ABORT, &previous) == 0);
  CHECK(previous == SECUREMEMORY_POLICY_QUARANTINE);
  securememory_factory_free(f);
}

struct worker {
  securememory_secret* shared;
  int good_reads;
  char own_error[512];
};

/* POSIX threads, not C11's <threads.h>: ThreadSanitizer does not intercept
 * thrd_create and crashes in such a thread. */
static void* work(void* arg) {
  struct worker* w = arg;
  for (int i = 0; i < 500; ++i) {
    int size = 0;
    if (securememory_secret_with_bytes(w->shared, size_of, NULL, &size) == 0 && size == 32) ++w->good_reads;
  }
  /* This thread's failure is this thread's message. */
  securememory_factory* f = NULL;
  if (securememory_factory_new("not-a-backend-of-this-thread", &f) == SECUREMEMORY_E_UNKNOWN_BACKEND) {
    snprintf(w->own_error, sizeof w->own_error, "%s", securememory_last_error_message());
  }
  return NULL;
}

static void threads_share_a_secret_and_keep_their_own_messages(void) {
  securememory_factory* f = NULL;
  CHECK(securememory_factory_new("protectedmemory", &f) == 0);
  securememory_secret* s = NULL;
  CHECK(securememory_secret_create_random(f, 32, &s) == 0);
  securememory_factory* none = NULL;
  CHECK(securememory_factory_new("main-thread-name", &none) == SECUREMEMORY_E_UNKNOWN_BACKEND);
  struct worker workers[4];
  pthread_t threads[4];
  for (int i = 0; i < 4; ++i) {
    workers[i].shared = s;
    workers[i].good_reads = 0;
    workers[i].own_error[0] = '\0';
    CHECK(pthread_create(&threads[i], NULL, work, &workers[i]) == 0);
  }
  for (int i = 0; i < 4; ++i) {
    CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK(workers[i].good_reads == 500);
    CHECK(strstr(workers[i].own_error, "not-a-backend-of-this-thread") != NULL);
  }
  CHECK(strstr(securememory_last_error_message(), "main-thread-name") != NULL);
  securememory_secret_free(s);
  securememory_factory_free(f);
}

int main(void) {
  /* Before the library's first use: a malformed page cache bound, which it
   * reports once, as a warning, to the sink installed here. */
  setenv("SECUREMEMORY_PAGE_CACHE", "lots", 1);
  if (securememory_set_log_sink(record_log, &startup_log) != 0) return 1;
  (void)securememory_page_cache_limit();

  run("error codes: every errc has a C constant and a static message", error_codes_and_messages);
  run("a log sink set first receives the library's startup warning", startup_log_went_to_the_sink);
  run("factories: default, named, unknown backend, NULL out", factories);
  run("every available backend: create wipes the source, with_bytes, close, closed secret", round_trip_on_every_backend);
  run("create and create_random refuse size 0, too large and NULL arguments, holding nothing", create_refuses_bad_input);
  run("create_with: fill writes the secret; a non-zero return holds nothing", create_with_fill);
  run("create_from_fd: reads exactly size bytes; an early end is read_failed", create_from_a_descriptor);
  run("with_bytes: NULL arguments, nested reads, close and free inside the callback", with_bytes_rules);
  run("backend names are sorted static strings; availability", backend_names_and_availability);
  run("metrics (also a shorter struct) and the page cache bound", metrics_and_page_cache);
  run("log level threshold: get, set, invalid levels", log_level_threshold);
  run("violations: handler with context, policy, default handler logs critical", violations);
  run("threads share one secret; each keeps its own last error", threads_share_a_secret_and_keep_their_own_messages);
  printf("1..%d\n", cases);
  return failed_cases == 0 ? 0 : 1;
}
