// Loading a key from a file straight into a secret: create_from_fd() reads
// the bytes into the secret's protected memory, with no buffer of ours in
// between. The file must hold exactly the 32 raw key bytes and be readable
// by its owner only. Then the key is used once, to encrypt and decrypt a
// message, to show it is the key.
//
//   head -c 32 /dev/urandom > key && chmod 600 key && ./key-from-file key
//
// Exit status 0 on success, 1 with a message on stderr otherwise.
#include "envelope.hpp"

#include <securememory/securememory.hpp>

#include <cstdio>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace {

// Opens the key file, refusing one that others could read or replace.
int open_key_file(const char* path) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    std::perror(path);
    return -1;
  }
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    std::fprintf(stderr, "%s: not a regular file readable by its owner only (chmod 600)\n", path);
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 2) {
    std::fprintf(stderr, "usage: key-from-file KEYFILE   (32 raw bytes, mode 600)\n");
    return 1;
  }
  const securememory::SecretFactory factory = securememory::make_factory();  // SECUREMEMORY_BACKEND
  const int fd = open_key_file(argv[1]);
  if (fd < 0) return 1;
  securememory::Secret key;
  bool longer = false;
  try {
    // Exactly 32 bytes, or errc::read_failed (and nothing is kept).
    key = factory.create_from_fd(fd, envelope::key_bytes);
    // One byte more means this is not a raw 32-byte key (hex? PEM?).
    char extra = 0;
    longer = read(fd, &extra, 1) != 0;
  } catch (...) {
    close(fd);
    throw;
  }
  close(fd);
  if (longer) {
    std::fprintf(stderr, "%s: longer than %zu bytes: not a raw key\n", argv[1], envelope::key_bytes);
    return 1;
  }

  // Use it: encrypt a message and decrypt it again.
  const std::string message = "attack at dawn";
  const auto sealed = key.with_bytes([&](std::span<const std::byte> k) {
    return envelope::seal(k, std::as_bytes(std::span(message.data(), message.size())));
  });
  std::string opened(message.size(), '\0');
  key.with_bytes([&](std::span<const std::byte> k) {
    envelope::open(k, sealed, std::as_writable_bytes(std::span(opened.data(), opened.size())));
  });
  const bool ok = opened == message;
  std::printf("key-from-file: a %zu-byte key loaded from %s into backend %s; round trip %s\n", key.size(), argv[1],
              std::string(factory.backend()).c_str(), ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
} catch (const securememory::error& e) {
  std::fprintf(stderr, "key-from-file: %s\n", e.what());
  // 77 tells `meson test` this host cannot run the chosen backend (a skip).
  return e.code_value() == securememory::errc::backend_unavailable ? 77 : 1;
}
