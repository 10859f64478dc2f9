// dns.h: the pure DNS codec of fun-doctor's name-resolution check (FUN0016): a query for one
// host name's addresses, and the answer taken apart. RFC 1035 messages as sent over UDP; no
// sockets, no files: bytes in, values out.
//
//   FUN_ASSIGN_OR_RETURN(std::string q, dns::BuildQuery(0x5a17, "deb.debian.org", dns::kTypeA));
//   ... send q to a nameserver, receive `bytes` ...
//   FUN_ASSIGN_OR_RETURN(dns::Response r, dns::ParseResponse(bytes, 0x5a17));
//   if (r.rcode == dns::kRcodeNxDomain) ...   // dns::RcodeName(r.rcode) == "NXDOMAIN"
//   for (const dns::Address& a : r.addresses) ...  // "151.101.2.132", "2a04:4e42::644"
//
// Queries: header (the id, RD set: the server recurses for us, one question), then the name as
// labels, type A or AAAA, class IN. Only host names are asked for: letters, digits and '-'
// (not first or last in a label), labels of 1..63 characters, at most 253 characters in all,
// one trailing '.' allowed (ValidateHostName says what is wrong).
//
// Responses come from the network and are untrusted: every read is bounds-checked; compressed
// names (RFC 1035 4.1.4) are followed through at most kMaxPointerJumps pointers and 255 bytes of
// name, so a pointer loop ends in an error; each section's records are read to their end (the
// authority and additional ones are only skipped). With TC set (the server cut the answer to
// fit the datagram), a message that ends between records is what fitted and is not an error;
// a record cut in half always is. Names are returned as text, with bytes other than printable
// ASCII, '.' inside a label and '\' escaped as dig writes them (\DDD, \., \\), so they are safe
// to print. Errors are DataLoss, saying what is wrong and at which byte
// (fuzz/dns_response_fuzzer.cc).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"

namespace fun::dns {

// Record types this codec knows by name (others are skipped and named "TYPE<n>").
inline constexpr uint16_t kTypeA = 1;
inline constexpr uint16_t kTypeCname = 5;
inline constexpr uint16_t kTypeAaaa = 28;
inline constexpr uint16_t kClassIn = 1;
// "A", "AAAA", "CNAME", else "TYPE<n>" (RFC 3597's form).
std::string TypeName(uint16_t type);

// Response codes (the header's 4 bits; without EDNS there are no more).
inline constexpr uint8_t kRcodeNoError = 0;
inline constexpr uint8_t kRcodeFormErr = 1;
inline constexpr uint8_t kRcodeServFail = 2;
inline constexpr uint8_t kRcodeNxDomain = 3;
inline constexpr uint8_t kRcodeNotImp = 4;
inline constexpr uint8_t kRcodeRefused = 5;
// "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", else "RCODE<n>".
std::string RcodeName(uint8_t rcode);

inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kMaxLabelLength = 63;
inline constexpr size_t kMaxNameLength = 253;      // as text, without the trailing '.'
inline constexpr size_t kMaxWireNameLength = 255;  // as labels on the wire, root included
inline constexpr size_t kMaxPointerJumps = 32;

// OK when `name` is a host name a query may ask for (see the header comment); otherwise
// InvalidArgument naming the name and what is wrong with it.
Status ValidateHostName(std::string_view name);

// A query for `name`'s records of `type` (kTypeA or kTypeAaaa), class IN, recursion desired.
// InvalidArgument for a name ValidateHostName refuses or another type.
StatusOr<std::string> BuildQuery(uint16_t id, std::string_view name, uint16_t type);

struct Address {
  uint16_t type = kTypeA;  // kTypeA or kTypeAaaa
  std::string owner;       // the record's name (the asked name, or a CNAME's target)
  std::string address;     // as inet_ntop writes it: "192.0.2.7", "2001:db8::7"
  uint32_t ttl = 0;
};

struct Alias {
  std::string owner;   // "deb.debian.org"
  std::string target;  // "debian.map.fastlydns.net"
};

struct Response {
  uint16_t id = 0;
  uint8_t rcode = kRcodeNoError;
  bool truncated = false;            // TC: the server cut the answer to fit
  bool recursion_available = false;  // RA
  bool authoritative = false;        // AA
  // The first question the response repeats (absent when it repeats none, as some servers do
  // in error answers).
  std::optional<std::string> question_name;
  uint16_t question_type = 0;
  // The answer section's records of class IN: addresses (A, AAAA) and aliases (CNAME), each
  // in the order they came; records of other types are skipped.
  std::vector<Address> addresses;
  std::vector<Alias> aliases;
  uint16_t answer_count = 0;  // ANCOUNT as the header says (TC: may be more than came)
};

// Takes a response apart. DataLoss when the bytes are not a well-formed DNS response (shorter
// than a header, QR clear, an opcode other than QUERY, a name, record or section that runs past
// the end, a bad label type, a compression loop, an A/AAAA record of the wrong size, a CNAME
// whose name overruns its record) or its id is not `expected_id`.
StatusOr<Response> ParseResponse(std::string_view bytes, uint16_t expected_id);

// Whether two names (as BuildQuery takes them or ParseResponse returns them) are the same
// name: ASCII letters compare case-insensitively (RFC 4343); one trailing '.' is ignored.
bool SameName(std::string_view a, std::string_view b);

}  // namespace fun::dns
