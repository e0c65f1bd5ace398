// securememory proof: the envelope workload's decrypt path leaves no copy of
// a data-row key (DRK) outside protected memory.
//
// Theory of operation. A forked child runs examples/envelope.hpp (the code
// the examples and the benchmark run) as a service would. It loads an
// intermediate key (IK) from the secret_exchange's memfd with
// create_from_fd() (the parent chose those bytes with getrandom), encrypts
// `record_count` records of 1 KiB (a DRK each from create_random(), wrapped
// under the IK, then closed), and decrypts every record: its DRK is
// unwrapped straight into a new secret with create_with()
// (envelope::unwrap_drk), written to the memfd from inside with_bytes() (the
// kernel reads it from the protected pages: so the parent learns it without
// a copy in either process), and decrypts the payload, which is checked.
// Then the child aborts, holding the DRKs (idle), or after closing them and
// the IK. The parent scans the core for the 8-byte pieces of the IK and of
// every DRK: PASS when there are none in the memory segments, none in the
// notes (the saved registers) and none elsewhere in the file.
//
// The control runs the same workload, but unwraps each DRK into an ordinary
// heap buffer and keeps it there, as the Go original does until its garbage
// collector runs: its core must show every DRK, or the scan could not have
// seen a copy, and the check fails.
#include "proof/proof.hpp"
#include "proof/support.hpp"

#include <securememory/registry.hpp>
#include <securememory/secret.hpp>

#include "envelope.hpp"  // examples/

#include <cstdlib>
#include <unistd.h>

namespace securememory::proof {
namespace {

constexpr std::size_t record_count = 8;
constexpr std::size_t payload_size = 1024;
constexpr std::size_t key_size = envelope::key_bytes;
constexpr std::size_t pieces_per_key = key_size / 8;

// Where the child writes DRK i in the memfd: after the exchange's two
// key-sized slots (slot 0 holds the IK).
std::size_t drk_offset(std::size_t i) { return (2 + i) * key_size; }

// Record i's payload (not a secret).
std::vector<std::byte> payload_of(std::size_t i) {
  std::vector<std::byte> p(payload_size);
  for (std::size_t j = 0; j < p.size(); ++j) p[j] = static_cast<std::byte>(i * 31 + j * 7);
  return p;
}

// Exit statuses of a child that could not run the workload (it aborts
// otherwise; escaping exceptions are run_child's 99 and 100 + errc).
constexpr int cannot_seek = 10;
constexpr int cannot_write = 11;
constexpr int wrong_payload = 12;

int decrypting_child(const secret_exchange& exchange, const std::string& backend, envelope_path path) {
  const auto factory = make_factory(backend);
  if (lseek(exchange.fd(), 0, SEEK_SET) != 0) return cannot_seek;
  Secret ik = factory.create_from_fd(exchange.fd(), key_size);
  std::vector<envelope::record> stored;
  for (std::size_t i = 0; i < record_count; ++i) stored.push_back(envelope::encrypt(factory, 1, ik, payload_of(i)));

  std::vector<Secret> drks;
  std::vector<std::vector<std::byte>> heap_drks;  // the control's copies
  for (std::size_t i = 0; i < record_count; ++i) {
    const auto& r = stored[i];
    std::vector<std::byte> payload;
    if (path == envelope_path::ordinary_buffer) {
      auto& drk = heap_drks.emplace_back(key_size);
      ik.with_bytes([&](std::span<const std::byte> key) { envelope::open(key, r.wrapped_drk, drk, envelope::id_context(r.ik_id)); });
      if (!exchange.write_at(drk_offset(i), drk)) return cannot_write;
      payload.resize(payload_size);
      envelope::open(drk, r.data, payload);
    } else {
      Secret drk = envelope::unwrap_drk(factory, ik, r);
      if (!drk.with_bytes([&](std::span<const std::byte> key) { return exchange.write_at(drk_offset(i), key); })) {
        return cannot_write;
      }
      payload = envelope::open_data(drk, r);
      drks.push_back(std::move(drk));
    }
    if (payload != payload_of(i)) return wrong_payload;
  }
  if (path == envelope_path::create_with_after_close) {
    for (auto& drk : drks) drk.close();
    ik.close();
  }
  std::abort();
}

}  // namespace

const char* envelope_path_name(envelope_path p) noexcept {
  switch (p) {
    case envelope_path::create_with_idle: return "create_with, DRKs held";
    case envelope_path::create_with_after_close: return "create_with, after close";
    case envelope_path::ordinary_buffer: return "control: DRKs unwrapped into heap buffers";
  }
  return "?";
}

result envelope_core_dump(const std::string& backend, envelope_path path, core_scan* scan_out) {
  if (const auto why = core_dump_limit(); !why.empty()) return result::skip(why);
  const secret_exchange exchange(key_size);
  core_scan scan;
  result scanned = scan_aborted_child(
      [&] { return decrypting_child(exchange, backend, path); },
      [&] {
        piece_set p;
        exchange.add_pieces(p, 0, key_size);  // the IK
        for (std::size_t i = 0; i < record_count; ++i) exchange.add_pieces(p, drk_offset(i), key_size);
        return p;
      },
      scan);
  if (scan_out != nullptr) *scan_out = scan;
  if (scanned.state != status::pass) return scanned;
  const std::string text = std::to_string(record_count) + " records decrypted; " + scanned.detail;
  if (path == envelope_path::ordinary_buffer) {
    constexpr std::size_t expected = record_count * pieces_per_key;
    if (scan.memory_hits < expected) {
      return result::fail("the scan missed DRK copies in ordinary memory (expected at least " + std::to_string(expected) +
                          " pieces): " + text);
    }
    return result::pass("the scan finds the heap copies: " + text);
  }
  if (scan.memory_hits != 0 || scan.note_hits != 0 || scan.other_hits != 0) return result::fail("key bytes in the core: " + text);
  return result::pass(text);
}

result check_envelope(const std::string& backend) {
  if (auto no = undeclared(backend, Guarantee::excluded_from_core_dumps)) return *no;
  if (const auto why = core_dump_limit(); !why.empty()) return result::skip(why);
  std::vector<std::pair<std::string, result>> parts;
  for (const auto path : {envelope_path::create_with_idle, envelope_path::create_with_after_close, envelope_path::ordinary_buffer}) {
    parts.emplace_back(envelope_path_name(path), envelope_core_dump(backend, path));
  }
  return combine(parts);
}

}  // namespace securememory::proof
