// Fuzzes the DNS codec of FUN0016 (lib/net/dns.h) from both ends.
//
// The input as a response from a nameserver (untrusted: it came from the network through the
// VM): ParseResponse must not crash or read out of bounds, whatever the bytes; what it accepts
// is a response to the id it was given (any other id is refused), with a rcode of 4 bits,
// addresses that inet_pton reads back in their family, and names no longer than their escaped
// 255 bytes.
//
// The input as a name: what BuildQuery accepts is a valid host name whose query, turned into a
// response by setting QR, parses back to that one question, type A, with no answers.
#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "lib/net/dns.h"

namespace {

using namespace fun::dns;

// Escaped text of a wire name of at most 255 bytes: \DDD for every byte at worst, plus dots.
constexpr size_t kMaxNameText = 4 * kMaxWireNameLength;

void CheckName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameText) __builtin_trap();
}

void AsResponse(std::string_view b) {
  if (b.size() < 2) {
    if (ParseResponse(b, 0).ok()) __builtin_trap();
    return;
  }
  const auto id =
      static_cast<uint16_t>(static_cast<uint8_t>(b[0]) << 8 | static_cast<uint8_t>(b[1]));
  auto r = ParseResponse(b, id);
  if (!r.ok()) return;
  if (ParseResponse(b, static_cast<uint16_t>(id ^ 0x5a5a)).ok()) __builtin_trap();
  if (r->id != id || r->rcode > 15) __builtin_trap();
  if (r->addresses.size() + r->aliases.size() > r->answer_count) __builtin_trap();
  if (r->question_name) CheckName(*r->question_name);
  for (const Address& a : r->addresses) {
    CheckName(a.owner);
    unsigned char buf[16];
    int family = a.type == kTypeA ? AF_INET : a.type == kTypeAaaa ? AF_INET6 : -1;
    if (family < 0 || inet_pton(family, a.address.c_str(), buf) != 1) __builtin_trap();
  }
  for (const Alias& a : r->aliases) {
    CheckName(a.owner);
    CheckName(a.target);
  }
}

void AsName(std::string_view name) {
  auto q = BuildQuery(0x1234, name, kTypeA);
  if (!q.ok()) {
    if (ValidateHostName(name).ok()) __builtin_trap();
    return;
  }
  if (!ValidateHostName(name).ok()) __builtin_trap();
  // The query itself is no response.
  if (ParseResponse(*q, 0x1234).ok()) __builtin_trap();
  std::string response = *q;
  response[2] = static_cast<char>(static_cast<uint8_t>(response[2]) | 0x80);
  auto r = ParseResponse(response, 0x1234);
  if (!r.ok() || !r->question_name || !SameName(*r->question_name, name) ||
      r->question_type != kTypeA || !r->addresses.empty() || r->rcode != kRcodeNoError) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view b(reinterpret_cast<const char*>(data), size);
  AsResponse(b);
  AsName(b);
  return 0;
}
