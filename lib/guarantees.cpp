// securememory: Guarantees by name (see include/securememory/guarantees.hpp).
//
// Theory of operation: one table maps each Guarantee to its field, its name
// and its meaning; everything else (lookup, printing, parsing) walks it.
#include <securememory/guarantees.hpp>

#include "internal.hpp"

#include <securememory/error.hpp>

#include <array>

namespace securememory {
namespace {

struct entry {
  Guarantee which;
  bool Guarantees::*field;
  std::string_view name;
  std::string_view meaning;
};

constexpr std::array<entry, 11> table{{
    {Guarantee::locked, &Guarantees::locked, "locked", "never swapped: the plaintext (and its key) only in locked memory"},
    {Guarantee::excluded_from_core_dumps, &Guarantees::excluded_from_core_dumps, "excluded_from_core_dumps",
     "never in a core dump or gcore snapshot"},
    {Guarantee::no_access_while_idle, &Guarantees::no_access_while_idle, "no_access_while_idle",
     "reading it outside an access faults"},
    {Guarantee::encrypted_at_rest, &Guarantees::encrypted_at_rest, "encrypted_at_rest",
     "only ciphertext outside an access; plaintext in a locked scratch during one"},
    {Guarantee::outside_direct_map, &Guarantees::outside_direct_map, "outside_direct_map",
     "unreadable through /proc/PID/mem and ptrace, even by root"},
    {Guarantee::key_outside_direct_map, &Guarantees::key_outside_direct_map, "key_outside_direct_map",
     "the key of the ciphertext unreadable through /proc/PID/mem and ptrace, even by root"},
    {Guarantee::guard_pages, &Guarantees::guard_pages, "guard_pages", "a read or write past its end faults"},
    {Guarantee::canary, &Guarantees::canary, "canary", "a write just in front of it is detected"},
    {Guarantee::tamper_detected, &Guarantees::tamper_detected, "tamper_detected",
     "any change to the stored secret is detected"},
    {Guarantee::hidden_from_fork_children, &Guarantees::hidden_from_fork_children, "hidden_from_fork_children",
     "a forked child sees none of it"},
    {Guarantee::wiped_on_release, &Guarantees::wiped_on_release, "wiped_on_release",
     "zeroed before its memory is given back or reused"},
}};

constexpr std::array<Guarantee, table.size()> order = [] {
  std::array<Guarantee, table.size()> out{};
  for (std::size_t i = 0; i < table.size(); ++i) out[i] = table[i].which;
  return out;
}();

const entry& entry_of(Guarantee g) noexcept { return table[static_cast<std::size_t>(g)]; }

static_assert([] {
  for (std::size_t i = 0; i < table.size(); ++i) {
    if (static_cast<std::size_t>(table[i].which) != i) return false;
  }
  return true;
}(), "the table is in enum order");

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::span<const Guarantee> all_guarantees() noexcept { return order; }

std::string_view to_string(Guarantee g) noexcept { return entry_of(g).name; }

std::string_view explain(Guarantee g) noexcept { return entry_of(g).meaning; }

std::optional<Guarantee> guarantee_from_string(std::string_view name) noexcept {
  for (const auto& e : table) {
    if (e.name == name) return e.which;
  }
  return std::nullopt;
}

bool has(const Guarantees& g, Guarantee which) noexcept { return g.*(entry_of(which).field); }

void set(Guarantees& g, Guarantee which, bool value) noexcept { g.*(entry_of(which).field) = value; }

std::string to_string(const Guarantees& g) {
  std::string out;
  for (const auto& e : table) {
    if (g.*(e.field)) out += (out.empty() ? "" : ",") + std::string(e.name);
  }
  return out;
}

Guarantees parse_guarantees(std::string_view names) {
  Guarantees out;
  while (!names.empty()) {
    const auto comma = names.find(',');
    const std::string_view name = trim(names.substr(0, comma));
    names = comma == std::string_view::npos ? std::string_view{} : names.substr(comma + 1);
    if (name.empty()) continue;
    const auto g = guarantee_from_string(name);
    if (!g) {
      std::string known;
      for (const auto& e : table) known += (known.empty() ? "" : ", ") + std::string(e.name);
      throw error(errc::invalid_argument,
                  "unknown Guarantee " + detail::quoted(name) + "; the Guarantees are: " + known);
    }
    set(out, *g);
  }
  return out;
}

}  // namespace securememory
