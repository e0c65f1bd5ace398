// A program built with -fno-exceptions, as some services and embedded code
// are, using the library through the std::error_code overloads only: every
// call reports through ec, nothing throws into this program, and errors are
// compared with both the library's Errc and the portable std::errc.
#include <securememory/securememory.hpp>

#include <array>
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what);
    ++failures;
  }
}

void exercise(const std::string& name) {
  std::error_code ec;
  auto factory = securememory::make_factory(name, ec);
  if (!factory) {
    std::printf("skip %s: %s\n", name.c_str(), std::string(securememory::last_error_message()).c_str());
    return;
  }
  std::vector<std::byte> key(32, std::byte{0x5a});
  auto secret = factory->create(key, ec);
  check(!ec && secret.size() == 32, "create");
  check(key[0] == std::byte{0}, "create wiped the source");
  auto first = secret.with_bytes([](std::span<const std::byte> b) { return std::to_integer<int>(b[0]); }, ec);
  check(!ec && first && *first == 0x5a, "with_bytes returns the value");
  secret.verify(ec);
  check(!ec, "verify");
  auto reader = secret.reader(ec);
  check(!ec && reader.has_value(), "reader");
  std::array<std::byte, 16> out{};
  check(reader && reader->read(out, ec) == 16 && !ec, "read");
  auto random = factory->create_random(64, ec);
  check(!ec && random.size() == 64, "create_random");
  auto derived = factory->create_with(
      16, [&](std::span<std::byte> dst) {
        random.with_bytes([&](std::span<const std::byte> src) {
          for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = src[i];
        }, ec);
      },
      ec);
  check(!ec && derived.size() == 16, "create_with");
  secret.close(ec);
  check(!ec && secret.is_closed(), "close");
  // Errors, reported, not thrown.
  (void)secret.with_bytes([](std::span<const std::byte>) {}, ec);
  check(ec == securememory::Errc::closed, "with_bytes after close is closed");
  check(!secret.reader(ec) && ec == securememory::Errc::closed, "reader after close is closed");
  check(ec == std::errc::bad_file_descriptor, "closed compares to std::errc::bad_file_descriptor");
  check(!securememory::last_error_message().empty(), "the last error's message is kept");
  (void)factory->create_random(0, ec);
  check(ec == securememory::Errc::invalid_size && ec == std::errc::invalid_argument, "size 0");
  void (*null_fn)(std::span<const std::byte>) = nullptr;
  random.with_bytes(null_fn, ec);
  check(ec == securememory::Errc::invalid_argument, "null callback");
  std::vector<std::byte> empty;
  (void)factory->create(empty, ec);
  check(ec == securememory::Errc::invalid_size, "empty source");
  (void)factory->create_from_fd(-1, 16, ec);
  check(ec == securememory::Errc::read_failed && ec == std::errc::io_error, "create_from_fd of a bad descriptor");
  std::printf("%s: ok\n", name.c_str());
}

}  // namespace

int main() {
  std::error_code ec;
  auto unknown = securememory::make_factory("no-such-backend", ec);
  check(!unknown && ec == securememory::Errc::unknown_backend, "unknown backend");
  securememory::Guarantees impossible;
  impossible.outside_direct_map = true;
  impossible.canary = true;
  auto refused = securememory::make_factory("protectedmemory", impossible, ec);
  check(!refused && ec == securememory::Errc::backend_unavailable && ec == std::errc::not_supported,
        "a guarantee the backend lacks");
  for (const auto* name : {"protectedmemory", "memguard", "secretmem", "sealed"}) exercise(name);
  std::printf("%d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
