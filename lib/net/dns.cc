#include "lib/net/dns.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <optional>

namespace fun::dns {
namespace {

// DNS response bytes, read with bounds checks: every Read* fails rather than go past the end.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : b_(bytes) {}

  size_t size() const { return b_.size(); }
  uint8_t At(size_t i) const { return static_cast<uint8_t>(b_[i]); }

  Status Need(size_t at, size_t n, std::string_view what) const {
    if (at > b_.size() || b_.size() - at < n) {
      return Malformed(at, fmt::format("{} needs {} bytes, {} left", what, n,
                                       at > b_.size() ? 0 : b_.size() - at));
    }
    return OkStatus();
  }
  uint16_t U16(size_t at) const { return static_cast<uint16_t>(At(at) << 8 | At(at + 1)); }
  uint32_t U32(size_t at) const {
    return static_cast<uint32_t>(U16(at)) << 16 | static_cast<uint32_t>(U16(at + 2));
  }

  // The name at `at` as text (see AppendLabel), following compression pointers. `*next` is
  // the offset after the name where it starts (after its first pointer, when it has one).
  StatusOr<std::string> Name(size_t at, size_t* next) const {
    std::string text;
    size_t pos = at;
    size_t wire = 0;
    size_t jumps = 0;
    std::optional<size_t> end;
    for (;;) {
      FUN_RETURN_IF_ERROR(Need(pos, 1, "a name's label"));
      uint8_t len = At(pos);
      if ((len & 0xC0) == 0xC0) {
        FUN_RETURN_IF_ERROR(Need(pos, 2, "a compression pointer"));
        size_t target = static_cast<size_t>(len & 0x3F) << 8 | At(pos + 1);
        if (!end) end = pos + 2;
        if (++jumps > kMaxPointerJumps) {
          return Malformed(at, fmt::format("a name with more than {} compression pointers (a loop)",
                                           kMaxPointerJumps));
        }
        if (target >= b_.size()) {
          return Malformed(pos, fmt::format("a compression pointer to byte {}, past the end ({})",
                                            target, b_.size()));
        }
        pos = target;
        continue;
      }
      if ((len & 0xC0) != 0) {
        return Malformed(pos, fmt::format("label type 0x{:02x} (only plain labels and "
                                          "compression pointers exist)",
                                          len & 0xC0));
      }
      wire += 1 + len;
      if (wire > kMaxWireNameLength) {
        return Malformed(at, fmt::format("a name longer than {} bytes", kMaxWireNameLength));
      }
      if (len == 0) {
        if (!end) end = pos + 1;
        break;
      }
      FUN_RETURN_IF_ERROR(Need(pos + 1, len, "a label"));
      if (!text.empty()) text.push_back('.');
      AppendLabel(b_.substr(pos + 1, len), &text);
      pos += 1 + len;
    }
    *next = *end;
    return text.empty() ? std::string(".") : text;
  }

  static Status Malformed(size_t at, std::string_view what) {
    return DataLossError(fmt::format("malformed DNS response: {} at byte {}", what, at));
  }

 private:
  // A label as dig writes it: printable ASCII as is, '.' and '\' escaped with '\', other
  // bytes as \DDD (decimal).
  static void AppendLabel(std::string_view label, std::string* out) {
    for (char ch : label) {
      auto c = static_cast<unsigned char>(ch);
      if (c == '.' || c == '\\') {
        out->push_back('\\');
        out->push_back(ch);
      } else if (c > 0x20 && c < 0x7f) {
        out->push_back(ch);
      } else {
        *out += fmt::format("\\{:03d}", c);
      }
    }
  }

  std::string_view b_;
};

bool IsLetterDigit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

void PutU16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
}

// At most `max` bytes of `s` for an error message, control and non-ASCII bytes as '?'.
std::string Shown(std::string_view s, size_t max) {
  std::string out;
  for (char ch : s.substr(0, max)) {
    auto c = static_cast<unsigned char>(ch);
    out.push_back(c < 0x20 || c >= 0x7f ? '?' : ch);
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string_view WithoutTrailingDot(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  return name;
}

// Record fields after the owner name: type, class, TTL, RDLENGTH.
constexpr size_t kRecordFixedSize = 10;

}  // namespace

std::string TypeName(uint16_t type) {
  switch (type) {
    case kTypeA:
      return "A";
    case kTypeCname:
      return "CNAME";
    case kTypeAaaa:
      return "AAAA";
    default:
      return fmt::format("TYPE{}", type);
  }
}

std::string RcodeName(uint8_t rcode) {
  switch (rcode) {
    case kRcodeNoError:
      return "NOERROR";
    case kRcodeFormErr:
      return "FORMERR";
    case kRcodeServFail:
      return "SERVFAIL";
    case kRcodeNxDomain:
      return "NXDOMAIN";
    case kRcodeNotImp:
      return "NOTIMP";
    case kRcodeRefused:
      return "REFUSED";
    default:
      return fmt::format("RCODE{}", rcode);
  }
}

Status ValidateHostName(std::string_view name) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format("\"{}\" is not a host name: {}", Shown(name, 80), why));
  };
  std::string_view n = WithoutTrailingDot(name);
  if (n.empty()) return bad("it is empty");
  if (n.size() > kMaxNameLength) {
    return bad(fmt::format("{} characters, more than {}", n.size(), kMaxNameLength));
  }
  size_t start = 0;
  for (;;) {
    size_t dot = n.find('.', start);
    std::string_view label = n.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty()) return bad("an empty label (two dots in a row, or a leading dot)");
    if (label.size() > kMaxLabelLength) {
      return bad(fmt::format("label \"{}\" has {} characters, more than {}", Shown(label, 20),
                             label.size(), kMaxLabelLength));
    }
    for (char c : label) {
      if (!IsLetterDigit(c) && c != '-') {
        return bad(fmt::format("label \"{}\" holds a character other than letters, digits and '-'",
                               Shown(label, 63)));
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return bad(fmt::format("label \"{}\" starts or ends with '-'", label));
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return OkStatus();
}

StatusOr<std::string> BuildQuery(uint16_t id, std::string_view name, uint16_t type) {
  if (type != kTypeA && type != kTypeAaaa) {
    return InvalidArgumentError(
        fmt::format("DNS query type {}: only A and AAAA are asked for", TypeName(type)));
  }
  FUN_RETURN_IF_ERROR(ValidateHostName(name));
  std::string_view n = WithoutTrailingDot(name);
  std::string q;
  q.reserve(kHeaderSize + n.size() + 2 + 4);
  PutU16(&q, id);
  PutU16(&q, 0x0100);  // QR 0, opcode QUERY, RD 1
  PutU16(&q, 1);       // QDCOUNT
  PutU16(&q, 0);       // ANCOUNT
  PutU16(&q, 0);       // NSCOUNT
  PutU16(&q, 0);       // ARCOUNT
  size_t start = 0;
  for (;;) {
    size_t dot = n.find('.', start);
    std::string_view label = n.substr(start, dot == std::string_view::npos ? dot : dot - start);
    q.push_back(static_cast<char>(label.size()));
    q.append(label);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  q.push_back('\0');
  PutU16(&q, type);
  PutU16(&q, kClassIn);
  return q;
}

StatusOr<Response> ParseResponse(std::string_view bytes, uint16_t expected_id) {
  Reader r(bytes);
  if (bytes.size() < kHeaderSize) {
    return DataLossError(fmt::format("malformed DNS response: {} bytes, shorter than a header ({})",
                                     bytes.size(), kHeaderSize));
  }
  Response out;
  out.id = r.U16(0);
  if (out.id != expected_id) {
    return DataLossError(
        fmt::format("DNS response id 0x{:04x} is not the query's (0x{:04x})", out.id, expected_id));
  }
  uint16_t flags = r.U16(2);
  if ((flags & 0x8000) == 0) return Reader::Malformed(2, "QR is clear: a query, not a response");
  unsigned opcode = (flags >> 11) & 0xF;
  if (opcode != 0) {
    return Reader::Malformed(2, fmt::format("opcode {}, not a standard query's answer", opcode));
  }
  out.authoritative = (flags & 0x0400) != 0;
  out.truncated = (flags & 0x0200) != 0;
  out.recursion_available = (flags & 0x0080) != 0;
  out.rcode = static_cast<uint8_t>(flags & 0xF);
  const uint16_t qdcount = r.U16(4);
  out.answer_count = r.U16(6);
  const uint16_t nscount = r.U16(8);
  const uint16_t arcount = r.U16(10);

  size_t pos = kHeaderSize;
  // With TC, the message may end between records: what fitted.
  auto cut_here = [&] { return out.truncated && pos == bytes.size(); };

  for (uint16_t i = 0; i < qdcount; ++i) {
    if (cut_here()) return out;
    size_t next = 0;
    FUN_ASSIGN_OR_RETURN(std::string qname, r.Name(pos, &next));
    FUN_RETURN_IF_ERROR(r.Need(next, 4, "a question's type and class"));
    if (!out.question_name) {
      out.question_name = std::move(qname);
      out.question_type = r.U16(next);
    }
    pos = next + 4;
  }

  const uint32_t records = uint32_t{out.answer_count} + nscount + arcount;
  for (uint32_t i = 0; i < records; ++i) {
    if (cut_here()) return out;
    const size_t record_at = pos;
    size_t next = 0;
    FUN_ASSIGN_OR_RETURN(std::string owner, r.Name(pos, &next));
    FUN_RETURN_IF_ERROR(r.Need(next, kRecordFixedSize, "a record's type, class, TTL and length"));
    const uint16_t type = r.U16(next);
    const uint16_t klass = r.U16(next + 2);
    const uint32_t ttl = r.U32(next + 4);
    const uint16_t rdlength = r.U16(next + 8);
    const size_t rdata = next + kRecordFixedSize;
    FUN_RETURN_IF_ERROR(r.Need(rdata, rdlength, fmt::format("{} record data", TypeName(type))));
    pos = rdata + rdlength;
    if (i >= out.answer_count || klass != kClassIn) continue;  // authority, additional: skipped
    if (type == kTypeA || type == kTypeAaaa) {
      const size_t want = type == kTypeA ? 4 : 16;
      if (rdlength != want) {
        return Reader::Malformed(record_at, fmt::format("an {} record of {} bytes, not {}",
                                                        TypeName(type), rdlength, want));
      }
      char text[INET6_ADDRSTRLEN] = {};
      ::inet_ntop(type == kTypeA ? AF_INET : AF_INET6, bytes.data() + rdata, text, sizeof(text));
      out.addresses.push_back(
          Address{.type = type, .owner = std::move(owner), .address = text, .ttl = ttl});
    } else if (type == kTypeCname) {
      size_t end = 0;
      FUN_ASSIGN_OR_RETURN(std::string target, r.Name(rdata, &end));
      if (end != pos) {
        return Reader::Malformed(record_at,
                                 fmt::format("a CNAME record whose name takes {} bytes of its {}",
                                             end - rdata, rdlength));
      }
      out.aliases.push_back(Alias{.owner = std::move(owner), .target = std::move(target)});
    }
  }
  return out;
}

bool SameName(std::string_view a, std::string_view b) {
  a = WithoutTrailingDot(a);
  b = WithoutTrailingDot(b);
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto x = static_cast<unsigned char>(a[i]);
    auto y = static_cast<unsigned char>(b[i]);
    if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

}  // namespace fun::dns
