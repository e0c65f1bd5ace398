// securememory proof: small helpers (temporary directories, pipes, the
// memfd secret exchange). See support.hpp.
//
// Theory of operation: the secret exchange keeps the parent's knowledge of
// the secret outside both processes' memory while the child lives: bytes
// sit in a memfd's page cache; user space only holds them in buffers that
// are filled and emptied by the kernel (getrandom, pread, pwrite) and wiped
// with sodium_memzero, so no register or stack copy is made by this harness
// that could be mistaken for one made by the library.
#include "proof/support.hpp"

#include <securememory/registry.hpp>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

namespace securememory::proof {

bool smaps_mapping::has_flag(std::string_view flag) const {
  return std::find(vm_flags.begin(), vm_flags.end(), flag) != vm_flags.end();
}

std::vector<smaps_mapping> read_smaps() {
  std::ifstream in("/proc/self/smaps");
  std::vector<smaps_mapping> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto dash = line.find('-');
    const auto space = line.find(' ');
    // A header: "start-end perms offset dev inode path"; the fields have a ':' first.
    if (dash != std::string::npos && space != std::string::npos && dash < space && line.find(':') > space) {
      smaps_mapping m;
      m.start = std::stoull(line.substr(0, dash), nullptr, 16);
      m.end = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
      m.perms = line.substr(space + 1, 4);
      out.push_back(std::move(m));
      continue;
    }
    if (out.empty()) continue;
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    if (key == "Locked:") fields >> out.back().locked_kb;
    if (key == "Rss:") fields >> out.back().rss_kb;
    if (key == "VmFlags:") {
      for (std::string flag; fields >> flag;) out.back().vm_flags.push_back(flag);
    }
  }
  return out;
}


std::string errno_string(int err) {
  const char* name = strerrorname_np(err);
  const char* desc = strerrordesc_np(err);
  return std::string(name != nullptr ? name : "errno " + std::to_string(err)) + " (" +
         (desc != nullptr ? desc : "unknown") + ")";
}

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  return line;
}

std::string size_label(std::size_t size) {
  if (size >= (std::size_t{1} << 20U) && size % (std::size_t{1} << 20U) == 0) return std::to_string(size >> 20U) + " MiB";
  return std::to_string(size) + " B";
}

temp_dir::temp_dir() {
  const char* base = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe): the proof programs never change the environment
  std::string templ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/securememory-proof-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) {
    throw std::runtime_error("cannot create a temporary directory in " + templ + ": " + errno_string(errno));
  }
  path_ = templ;
}

temp_dir::~temp_dir() {
  if (DIR* d = opendir(path_.c_str())) {
    while (const dirent* e = readdir(d)) {  // NOLINT(concurrency-mt-unsafe): this stream is used by this thread only
      const std::string n = e->d_name;
      if (n != "." && n != "..") unlink((path_ + "/" + n).c_str());
    }
    closedir(d);
  }
  rmdir(path_.c_str());
}

pipe_pair::pipe_pair() {
  std::array<int, 2> fds{};
  if (pipe2(fds.data(), O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed: " + errno_string(errno));
  read_fd = fds[0];
  write_fd = fds[1];
}
pipe_pair::~pipe_pair() {
  close_read();
  close_write();
}
void pipe_pair::close_read() noexcept {
  if (read_fd >= 0) ::close(read_fd);
  read_fd = -1;
}
void pipe_pair::close_write() noexcept {
  if (write_fd >= 0) ::close(write_fd);
  write_fd = -1;
}

bool write_all(int fd, const void* buf, std::size_t len) noexcept {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    const ssize_t n = ::write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<std::size_t>(n);
  }
  return true;
}

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): a byte count and milliseconds, named at every call
bool read_exact(int fd, void* buf, std::size_t len, int timeout_ms) noexcept {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    pollfd pfd{fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    const ssize_t n = ::read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<std::size_t>(n);
  }
  return true;
}

namespace {

bool pread_all(int fd, std::byte* buf, std::size_t len, off_t offset) noexcept {
  while (len > 0) {
    const ssize_t n = ::pread(fd, buf, len, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf += n;
    len -= static_cast<std::size_t>(n);
    offset += n;
  }
  return true;
}

bool pwrite_all(int fd, const std::byte* buf, std::size_t len, off_t offset) noexcept {
  while (len > 0) {
    const ssize_t n = ::pwrite(fd, buf, len, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buf += n;
    len -= static_cast<std::size_t>(n);
    offset += n;
  }
  return true;
}

// Reads the whole secret through a Reader in odd-sized chunks, then wipes
// the chunk buffer; true when the byte count matches.
bool read_through(const Secret& s) {
  std::vector<std::byte> chunk(4093);
  auto reader = s.reader();
  std::size_t total = 0;
  for (std::size_t n = 0; (n = reader.read(chunk)) != 0;) total += n;
  sodium_memzero(chunk.data(), chunk.size());
  return total == s.size();
}

}  // namespace

secret_exchange::secret_exchange(std::size_t size) : size_(size) {
  fd_ = memfd_create("securememory-proof", MFD_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("memfd_create failed: " + errno_string(errno));
  std::vector<std::byte> buf(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = getrandom(buf.data() + done, size - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("getrandom failed: " + errno_string(errno));
    done += static_cast<std::size_t>(n);
  }
  const bool ok = pwrite_all(fd_, buf.data(), size, 0);
  sodium_memzero(buf.data(), buf.size());
  if (!ok) throw std::runtime_error("cannot write to the memfd: " + errno_string(errno));
}

secret_exchange::~secret_exchange() {
  if (fd_ >= 0) ::close(fd_);
}

secret_exchange::held secret_exchange::make_in_child(const std::string& backend) const {
  auto factory = make_factory(backend);
  held h;
  {
    std::vector<std::byte> source(size_);
    if (!pread_all(fd_, source.data(), size_, 0)) throw std::runtime_error("cannot read the memfd");
    h.given = factory.create(source);  // wipes source
  }
  h.random = factory.create_random(size_);
  const bool written = h.random.with_bytes([this](std::span<const std::byte> b) { return write_at(size_, b); });
  if (!written) throw std::runtime_error("cannot write to the memfd");
  if (!read_through(h.given) || !read_through(h.random)) throw std::runtime_error("a Reader returned a wrong count");
  return h;
}

std::vector<std::byte> secret_exchange::read_back(std::size_t offset, std::size_t count) const {
  std::vector<std::byte> out(count);
  if (!pread_all(fd_, out.data(), count, static_cast<off_t>(offset))) {
    throw std::runtime_error("cannot read the secret's bytes back from the memfd");
  }
  return out;
}

std::vector<std::byte> secret_exchange::given_bytes() const { return read_back(0, size_); }

bool secret_exchange::write_at(std::size_t offset, std::span<const std::byte> bytes) const noexcept {
  return pwrite_all(fd_, bytes.data(), bytes.size(), static_cast<off_t>(offset));
}

void secret_exchange::add_pieces(piece_set& p, std::size_t offset, std::size_t count) const {
  auto bytes = read_back(offset, count);
  p.add(bytes);
  sodium_memzero(bytes.data(), bytes.size());
}

piece_set secret_exchange::pieces() const {
  piece_set p;
  for (const std::size_t offset : {std::size_t{0}, size_}) add_pieces(p, offset, size_);
  return p;
}

namespace {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool built_with_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool built_with_sanitizer = true;
#else
constexpr bool built_with_sanitizer = false;
#endif
#else
constexpr bool built_with_sanitizer = false;
#endif
constexpr std::uintptr_t sanitizer_shadow_bytes = std::uintptr_t{1} << 30U;  // 1 GiB
}  // namespace

std::size_t pieces_in_process(pid_t pid, const piece_set& pieces, std::size_t* scanned) {
  const std::string proc = "/proc/" + std::to_string(pid);
  const int mem = open((proc + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  if (mem < 0) throw std::runtime_error("cannot open " + proc + "/mem: " + errno_string(errno));
  // Mappings with resident pages only: untouched address space holds no
  // copy (and a sanitizer runtime reserves terabytes of it).
  struct range {
    std::uintptr_t start = 0;
    std::uintptr_t end = 0;
    bool skip = false;
  };
  std::vector<range> ranges;
  {
    std::ifstream smaps(proc + "/smaps");
    for (std::string line; std::getline(smaps, line);) {
      const auto dash = line.find('-');
      const auto space = line.find(' ');
      if (dash != std::string::npos && space != std::string::npos && dash < space && line.find(':') > space) {
        range r;
        r.start = std::stoull(line.substr(0, dash), nullptr, 16);
        r.end = std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16);
        r.skip = line.find("[vvar]") != std::string::npos || line.find("[vsyscall]") != std::string::npos;
        ranges.push_back(r);
      } else if (line.rfind("Rss:", 0) == 0 && !ranges.empty()) {
        if (std::stoull(line.substr(4)) == 0) ranges.back().skip = true;
      }
    }
  }
  std::vector<std::byte> buf(std::size_t{1} << 20U);
  std::size_t hits = 0;
  std::size_t read_bytes = 0;
  for (const auto& r : ranges) {
    if (r.skip) continue;
    // A sanitizer build's shadow and metadata: reservations of terabytes
    // with a few resident pages of the runtime's bookkeeping about
    // addresses (no copy of data is kept there). Reading them would take
    // hours; the plain build reads every resident mapping.
    if (built_with_sanitizer && r.end - r.start > sanitizer_shadow_bytes) continue;
    for (std::uintptr_t at = r.start; at < r.end; at += buf.size()) {
      const std::size_t want = std::min<std::size_t>(buf.size(), r.end - at);
      const ssize_t n = pread(mem, buf.data(), want, static_cast<off_t>(at));
      if (n <= 0) break;  // unreadable (memfd_secret: EIO), or gone
      read_bytes += static_cast<std::size_t>(n);
      hits += pieces.count_in({buf.data(), static_cast<std::size_t>(n)});
    }
  }
  close(mem);
  sodium_memzero(buf.data(), buf.size());
  if (scanned != nullptr) *scanned = read_bytes;
  return hits;
}

holding_child::holding_child(const secret_exchange& exchange, const std::string& backend) {
  (void)std::fflush(nullptr);  // best effort: a failed flush only risks a repeated line
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed: " + errno_string(errno));
  if (pid_ == 0) {
    ready_.close_read();
    release_.close_write();
    try {
      auto held = exchange.make_in_child(backend);
      const auto addr = held.given.with_bytes([](std::span<const std::byte> b) { return reinterpret_cast<std::uintptr_t>(b.data()); });
      if (!write_all(ready_.write_fd, &addr, sizeof addr)) _exit(3);
      char c;
      while (::read(release_.read_fd, &c, 1) > 0) {
      }  // until the parent closes its end
    } catch (...) {
      _exit(2);
    }
    _exit(0);
  }
  ready_.close_write();
  release_.close_read();
  if (!read_exact(ready_.read_fd, &address_, sizeof address_, 60000)) address_ = 0;
}

child_status holding_child::finish() {
  if (!end_) {
    release_.close_write();
    end_ = wait_child(pid_, 30);
  }
  return *end_;
}

holding_child::~holding_child() {
  if (pid_ > 0) (void)finish();
}

}  // namespace securememory::proof
