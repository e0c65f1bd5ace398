/* Uses the installed library through the C API only; exits 0 when a round
 * trip works (the source wiped, the bytes intact inside the callback). */
#include <securememory/securememory.h>

#include <stdio.h>
#include <string.h>

static int check(const void* bytes, size_t size, void* context) {
  return size == 16 && memcmp(bytes, context, size) == 0;
}

int main(void) {
  unsigned char key[16];
  unsigned char expected[16];
  memset(key, 0x5a, sizeof key);
  memcpy(expected, key, sizeof key);
  securememory_factory* factory = NULL;
  securememory_secret* secret = NULL;
  if (securememory_factory_new(NULL, &factory) != 0 || securememory_secret_create(factory, key, sizeof key, &secret) != 0) {
    fprintf(stderr, "consumer_c: %s\n", securememory_last_error_message());
    return 1;
  }
  int intact = 0;
  const int read = securememory_secret_with_bytes(secret, check, expected, &intact);
  const int wiped = key[0] == 0 && key[15] == 0;
  const int closed = securememory_secret_close(secret) == 0 && securememory_secret_is_closed(secret);
  printf("consumer_c: backend %s, source wiped %s, bytes intact %s\n", securememory_factory_backend(factory),
         wiped ? "yes" : "no", read == 0 && intact ? "yes" : "no");
  securememory_secret_free(secret);
  securememory_factory_free(factory);
  return read == 0 && intact && wiped && closed ? 0 : 1;
}
