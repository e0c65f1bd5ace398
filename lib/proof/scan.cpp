// securememory proof: finding a secret's bytes in memory and in ELF core
// files. A piece_set holds the secret's 8-byte pieces (a sorted list behind
// a bit filter); scan_core_file() counts them in a core's memory segments
// (PT_LOAD), its notes (PT_NOTE: saved registers) and elsewhere, after
// checking that the file is an ELF core of the expected child.
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <elf.h>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/procfs.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>


namespace securememory::proof {

// ---- piece_set ------------------------------------------------------------------------

namespace {
constexpr unsigned filter_bits_log2 = 22;
inline std::uint64_t filter_slot(std::uint64_t v) noexcept { return (v * 0x9E3779B97F4A7C15ULL) >> (64U - filter_bits_log2); }
}  // namespace

void piece_set::add(std::span<const std::byte> secret) {
  if (filter_.empty()) filter_.assign((std::size_t{1} << filter_bits_log2) / 64, 0);
  for (std::size_t i = 0; i + 8 <= secret.size(); i += 8) {
    std::uint64_t v;
    std::memcpy(&v, secret.data() + i, 8);
    const std::uint64_t first = v & 0xFFU;
    if (v == first * 0x0101010101010101ULL) continue;  // one repeated byte: would match padding
    sorted_.push_back(v);
    const auto slot = filter_slot(v);
    filter_[slot / 64] |= std::uint64_t{1} << (slot % 64);
  }
  std::sort(sorted_.begin(), sorted_.end());
  sorted_.erase(std::unique(sorted_.begin(), sorted_.end()), sorted_.end());
}

// Not instrumented by a sanitizer: it reads only the caller's buffer, and
// instrumented it took minutes per process scan under TSan.
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize("address", "thread", "undefined")))
#endif
std::size_t piece_set::count_in(std::span<const std::byte> hay, std::vector<std::size_t>* offsets) const {
  if (sorted_.empty() || hay.size() < 8) return 0;
  std::size_t hits = 0;
  const std::byte* p = hay.data();
  const std::byte* end = hay.data() + hay.size() - 8;
  for (; p <= end; ++p) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    const auto slot = filter_slot(v);
    if ((filter_[slot / 64] >> (slot % 64) & 1U) == 0) continue;
    if (std::binary_search(sorted_.begin(), sorted_.end(), v)) {
      ++hits;
      if (offsets != nullptr && offsets->size() < 8) offsets->push_back(static_cast<std::size_t>(p - hay.data()));
    }
  }
  return hits;
}

// ---- ELF core scanning ----------------------------------------------------------------

namespace {

// A read-only mapping of a whole file (not the heap: a parent that read
// cores into its heap would hand that memory to every later child).
struct mapped_file {
  const std::byte* data = nullptr;
  std::size_t size = 0;
  explicit mapped_file(const std::string& path) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st{};
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
      void* p = mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) {
        data = static_cast<const std::byte*>(p);
        size = static_cast<std::size_t>(st.st_size);
      }
    }
    close(fd);
  }
  ~mapped_file() {
    if (data != nullptr) munmap(const_cast<std::byte*>(data), size);
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
};

}  // namespace

core_scan scan_core_file(const std::string& path, const piece_set& pieces) {
  core_scan s;
  const mapped_file file(path);
  if (file.data == nullptr) {
    s.error = "cannot map " + path;
    return s;
  }
  s.file_bytes = file.size;
  Elf64_Ehdr eh{};
  if (file.size < sizeof eh) {
    s.error = "file too short for an ELF header";
    return s;
  }
  std::memcpy(&eh, file.data, sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_type != ET_CORE ||
      eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff + std::size_t{eh.e_phnum} * sizeof(Elf64_Phdr) > file.size) {
    s.error = "not a 64-bit ELF core file";
    return s;
  }
  s.is_core = true;
  const std::span<const std::byte> all(file.data, file.size);
  std::size_t in_load = 0;
  std::size_t in_note = 0;
  bool have_status = false;
  for (std::size_t i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    std::memcpy(&ph, file.data + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_offset > file.size) continue;
    const std::size_t len = std::min<std::size_t>(ph.p_filesz, file.size - ph.p_offset);
    const auto data = all.subspan(ph.p_offset, len);
    if (ph.p_type == PT_LOAD) {
      ++s.load_segments;
      std::vector<std::size_t> offsets;
      in_load += pieces.count_in(data, &offsets);
      for (const auto o : offsets) {
        if (s.memory_hit_addresses.size() < 8) s.memory_hit_addresses.push_back(ph.p_vaddr + o);
      }
    } else if (ph.p_type == PT_NOTE) {
      in_note += pieces.count_in(data);
      // Notes: namesz, descsz, type, name (4-aligned), desc (4-aligned).
      for (std::size_t off = 0; off + sizeof(Elf64_Nhdr) <= data.size();) {
        Elf64_Nhdr nh{};
        std::memcpy(&nh, data.data() + off, sizeof nh);
        const std::size_t name_at = off + sizeof nh;
        const std::size_t desc_at = name_at + ((nh.n_namesz + 3U) & ~3U);
        if (desc_at + nh.n_descsz > data.size()) break;
        if (!have_status && nh.n_type == NT_PRSTATUS && nh.n_descsz >= sizeof(prstatus_t)) {
          prstatus_t st{};
          std::memcpy(&st, data.data() + desc_at, sizeof st);
          s.pid = st.pr_pid;
          s.signal = st.pr_cursig;
          have_status = true;
        }
        off = desc_at + ((nh.n_descsz + 3U) & ~3U);
      }
    }
  }
  s.memory_hits = in_load;
  s.note_hits = in_note;
  const std::size_t total = pieces.count_in(all);
  s.other_hits = total > in_load + in_note ? total - in_load - in_note : 0;
  if (!have_status) s.error = "the core has no NT_PRSTATUS note";
  return s;
}

const char* core_state_name(core_state s) noexcept {
  switch (s) {
    case core_state::idle: return "idle";
    case core_state::inside_with_bytes: return "inside with_bytes";
    case core_state::after_close: return "after close";
  }
  return "?";
}

}  // namespace securememory::proof
