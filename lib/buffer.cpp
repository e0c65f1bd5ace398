// securememory: WipingBuffer (include/securememory/buffer.hpp).
#include <securememory/buffer.hpp>

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

namespace securememory {
namespace {

std::byte* zeroed(std::size_t size) {
  if (size == 0) return nullptr;
  auto* p = static_cast<std::byte*>(::operator new(size, std::nothrow));
  if (p == nullptr) throw Error(Errc::out_of_memory, "cannot allocate a WipingBuffer of " + std::to_string(size) + " bytes");
  std::memset(p, 0, size);
  return p;
}

void wipe_and_free(std::byte* p, std::size_t size) noexcept {
  if (p == nullptr) return;
  sodium_memzero(p, size);
  ::operator delete(p);
}

}  // namespace

WipingBuffer::WipingBuffer(std::size_t size) : data_(zeroed(size)), size_(size) {}

WipingBuffer::WipingBuffer(WipingBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

WipingBuffer& WipingBuffer::operator=(WipingBuffer&& other) noexcept {
  if (this != &other) {
    clear();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

WipingBuffer::~WipingBuffer() { clear(); }

void WipingBuffer::clear() noexcept {
  wipe_and_free(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

void WipingBuffer::resize(std::size_t new_size) {
  std::byte* fresh = zeroed(new_size);
  if (fresh != nullptr && data_ != nullptr) std::memcpy(fresh, data_, std::min(size_, new_size));
  wipe_and_free(data_, size_);
  data_ = fresh;
  size_ = new_size;
}

}  // namespace securememory
