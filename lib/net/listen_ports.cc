#include "lib/net/listen_ports.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "lib/base/strings.h"
#include "lib/net/agent_protocol.h"

namespace fun::net {
namespace {

// /proc/net's socket states (include/net/tcp_states.h): a listening TCP socket is TCP_LISTEN;
// a bound, unconnected UDP socket is TCP_CLOSE (a connected one is TCP_ESTABLISHED).
constexpr unsigned kTcpListen = 0x0A;
constexpr unsigned kUdpUnconnected = 0x07;

constexpr std::string_view kTruncatedLine = "truncated";
// "udp " + the longest inet_ntop literal (45) + " 65535\n" is 56.
constexpr size_t kMaxLine = 64;

// A guest's bytes in an error message: printable ASCII as is, anything else escaped, bounded.
std::string Excerpt(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out.push_back(c);
    } else {
      out += fmt::format("\\x{:02x}", static_cast<uint8_t>(c));
    }
  }
  if (s.size() > 64) out += "...";
  return out;
}

struct Endpoint {
  std::string address;
  uint16_t port = 0;
};

// "0100007F:1F90" (IPv4) or 32 hex digits ":PORT" (IPv6). Each 8-digit word is a 32-bit
// integer printed in host byte order; its bytes in memory are the address's, in network order.
std::optional<Endpoint> ParseEndpoint(std::string_view s, bool ipv6) {
  const size_t words = ipv6 ? 4 : 1;
  if (s.size() != words * 8 + 1 + 4 || s[words * 8] != ':') return std::nullopt;
  unsigned char bytes[16];
  for (size_t i = 0; i < words; ++i) {
    auto w = ParseHex32(s.substr(i * 8, 8));
    if (!w) return std::nullopt;
    std::memcpy(bytes + 4 * i, &*w, 4);
  }
  auto port = ParseHex32(s.substr(words * 8 + 1));
  if (!port) return std::nullopt;
  char text[INET6_ADDRSTRLEN];
  if (inet_ntop(ipv6 ? AF_INET6 : AF_INET, bytes, text, sizeof(text)) == nullptr) {
    return std::nullopt;
  }
  return Endpoint{text, static_cast<uint16_t>(*port)};
}

std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

// True when `address` is an IP literal exactly as inet_ntop writes it.
bool CanonicalAddress(const std::string& address) {
  unsigned char bytes[16];
  char text[INET6_ADDRSTRLEN];
  const int family = address.find(':') == std::string::npos ? AF_INET : AF_INET6;
  return address.size() < sizeof(text) && inet_pton(family, address.c_str(), bytes) == 1 &&
         inet_ntop(family, bytes, text, sizeof(text)) != nullptr && address == text;
}

std::optional<uint16_t> ParsePort(std::string_view s) {
  if (s.empty() || s.size() > 5 || s[0] == '0') return std::nullopt;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > 65535) return std::nullopt;
  return static_cast<uint16_t>(v);
}

}  // namespace

StatusOr<std::vector<ListenPort>> ParseProcNetSockets(std::string_view text, Protocol protocol,
                                                      bool ipv6) {
  const std::string file = fmt::format("{}{}", ProtocolName(protocol), ipv6 ? "6" : "");
  std::vector<ListenPort> out;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    const std::vector<std::string_view> f = Fields(line);
    if (f.empty()) continue;
    if (line_no == 1 && f[0] == "sl") continue;  // the header
    auto bad = [&](std::string_view why) {
      return InvalidArgumentError(
          fmt::format("/proc/net/{} line {} \"{}\": {}", file, line_no, Excerpt(line), why));
    };
    if (f.size() < 4) return bad("fewer than 4 fields");
    if (f[0].size() < 2 || f[0].back() != ':' ||
        !std::all_of(f[0].begin(), f[0].end() - 1, [](char c) { return c >= '0' && c <= '9'; })) {
      return bad("no slot number");
    }
    auto local = ParseEndpoint(f[1], ipv6);
    if (!local) return bad(ipv6 ? "not a local IPv6 address:port" : "not a local address:port");
    if (!ParseEndpoint(f[2], ipv6)) return bad("not a remote address:port");
    auto state = f[3].size() == 2 ? ParseHex32(f[3]) : std::nullopt;
    if (!state) return bad("no socket state");
    const unsigned wanted = protocol == Protocol::kTcp ? kTcpListen : kUdpUnconnected;
    if (*state != wanted || local->port == 0) continue;
    out.push_back(
        {.protocol = protocol, .address = std::move(local->address), .port = local->port});
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

StatusOr<std::string> EncodeListenPorts(const std::vector<ListenPort>& ports, bool truncated) {
  std::vector<std::string> lines;
  lines.reserve(ports.size());
  for (const ListenPort& p : ports) {
    if ((p.protocol != Protocol::kTcp && p.protocol != Protocol::kUdp) || p.port == 0 ||
        !CanonicalAddress(p.address)) {
      return InvalidArgumentError(fmt::format("listening ports: cannot encode {} \"{}\" port {}",
                                              static_cast<int>(p.protocol), Excerpt(p.address),
                                              p.port));
    }
    lines.push_back(fmt::format("{} {} {}\n", ProtocolName(p.protocol), p.address, p.port));
  }
  size_t total = 0;
  for (const std::string& l : lines) total += l.size();
  truncated = truncated || lines.size() > kMaxListenPorts || total > agent::kMaxMessageSize;
  // Room for the marker line when the list is cut.
  const size_t budget = agent::kMaxMessageSize - (truncated ? kTruncatedLine.size() + 1 : 0);
  std::string out;
  for (size_t i = 0; i < lines.size() && i < kMaxListenPorts; ++i) {
    if (out.size() + lines[i].size() > budget) break;
    out += lines[i];
  }
  if (truncated) out += fmt::format("{}\n", kTruncatedLine);
  return out;
}

StatusOr<ListenPortReport> DecodeListenPorts(std::string_view text) {
  if (text.size() > agent::kMaxMessageSize) {
    return InvalidArgumentError(fmt::format("listening ports: a report of {} bytes (at most {})",
                                            text.size(), agent::kMaxMessageSize));
  }
  ListenPortReport r;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    auto bad = [&](std::string_view why) {
      return InvalidArgumentError(
          fmt::format("listening ports, line {} \"{}\": {}", line_no, Excerpt(line), why));
    };
    if (nl == std::string_view::npos) return bad("no newline at its end");
    text.remove_prefix(nl + 1);
    if (r.truncated) return bad("a line after \"truncated\"");
    if (line == kTruncatedLine) {
      r.truncated = true;
      continue;
    }
    if (line.size() > kMaxLine) return bad(fmt::format("longer than {} bytes", kMaxLine));
    if (r.ports.size() == kMaxListenPorts) {
      return bad(fmt::format("more than {} entries", kMaxListenPorts));
    }
    const size_t s1 = line.find(' ');
    const size_t s2 = s1 == std::string_view::npos ? s1 : line.find(' ', s1 + 1);
    if (s2 == std::string_view::npos || line.find(' ', s2 + 1) != std::string_view::npos) {
      return bad("expected \"tcp|udp ADDRESS PORT\"");
    }
    ListenPort p;
    const std::string_view proto = line.substr(0, s1);
    if (proto == "tcp") {
      p.protocol = Protocol::kTcp;
    } else if (proto == "udp") {
      p.protocol = Protocol::kUdp;
    } else {
      return bad("the protocol must be tcp or udp");
    }
    p.address = std::string(line.substr(s1 + 1, s2 - s1 - 1));
    if (!CanonicalAddress(p.address)) return bad("not an IP address in canonical form");
    auto port = ParsePort(line.substr(s2 + 1));
    if (!port) return bad("the port must be 1..65535 (decimal, no leading zeros)");
    p.port = *port;
    r.ports.push_back(std::move(p));
  }
  return r;
}

}  // namespace fun::net
