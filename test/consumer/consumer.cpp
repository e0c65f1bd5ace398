// Uses the library only through its installed public header and the
// securememory dependency; exits 0 when a round trip works.
#include <securememory/securememory.hpp>

#include <array>
#include <cstdio>

int main() {
  try {
    auto factory = securememory::make_factory();
    std::array<std::byte, 16> key{};
    key.fill(std::byte{0x5a});
    auto secret = factory.create(key);
    const bool wiped = key == std::array<std::byte, 16>{};
    const bool intact = secret.with_bytes([](std::span<const std::byte> b) {
      for (auto x : b) {
        if (x != std::byte{0x5a}) return false;
      }
      return b.size() == 16;
    });
    secret.close();
    std::printf("consumer: backend %s, source wiped %s, bytes intact %s\n",
                std::string(factory.backend()).c_str(), wiped ? "yes" : "no", intact ? "yes" : "no");
    return wiped && intact && secret.is_closed() ? 0 : 1;
  } catch (const securememory::error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
