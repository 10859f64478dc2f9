#include "lib/net/agent_protocol.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include "lib/base/flags.h"

namespace fun::agent {
namespace {

constexpr std::string_view kRequestMagic = "FUNA";
constexpr std::string_view kReplyMagic = "FUNR";
// magic[4] version[1] token[32] kind[1] arg[8] target_len[2]
constexpr size_t kRequestFixed = 4 + 1 + kTokenSize + 1 + 8 + 2;
// magic[4] status[1] message_len[2]
constexpr size_t kReplyFixed = 4 + 1 + 2;

void Put(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t Get(std::string_view b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(b[at + static_cast<size_t>(i)]);
  }
  return v;
}

bool KnownKind(uint8_t k) { return k >= 1 && k <= 9; }

Status Bad(std::string_view what) {
  return InvalidArgumentError(fmt::format("agent protocol: {}", what));
}

// Checks a magic against however many bytes have arrived, so garbage fails at once.
bool MagicSoFar(std::string_view buffered, std::string_view magic) {
  size_t n = std::min(buffered.size(), magic.size());
  return buffered.substr(0, n) == magic.substr(0, n);
}

}  // namespace

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kPing:
      return "ping";
    case Kind::kContainerd:
      return "containerd";
    case Kind::kTcp:
      return "tcp";
    case Kind::kUdp:
      return "udp";
    case Kind::kShutdown:
      return "shutdown";
    case Kind::kTimeSync:
      return "timesync";
    case Kind::kLog:
      return "log";
    case Kind::kPorts:
      return "ports";
    case Kind::kP9:
      return "p9";
  }
  return "unknown";
}

std::string_view ReplyStatusName(ReplyStatus s) {
  switch (s) {
    case ReplyStatus::kOk:
      return "ok";
    case ReplyStatus::kBadToken:
      return "bad token";
    case ReplyStatus::kBadRequest:
      return "bad request";
    case ReplyStatus::kUnavailable:
      return "unavailable";
    case ReplyStatus::kFailed:
      return "failed";
  }
  return "unknown";
}

StatusOr<std::string> EncodeRequest(const Request& r) {
  if (r.target.size() > kMaxTargetSize) {
    return Bad(fmt::format("a target of {} bytes (at most {})", r.target.size(), kMaxTargetSize));
  }
  if (!KnownKind(static_cast<uint8_t>(r.kind))) return Bad("unknown request kind");
  std::string out(kRequestMagic);
  Put(&out, r.version, 1);
  out.append(reinterpret_cast<const char*>(r.token.data()), r.token.size());
  Put(&out, static_cast<uint8_t>(r.kind), 1);
  Put(&out, r.arg, 8);
  Put(&out, r.target.size(), 2);
  out += r.target;
  return out;
}

StatusOr<std::optional<std::pair<Request, size_t>>> DecodeRequest(std::string_view b) {
  if (!MagicSoFar(b, kRequestMagic)) return Bad("not a request (wrong magic)");
  if (b.size() >= 5 && static_cast<uint8_t>(b[4]) != kProtocolVersion) {
    return Bad(fmt::format("protocol version {} (this side speaks {})", static_cast<uint8_t>(b[4]),
                           kProtocolVersion));
  }
  constexpr size_t kKindAt = 4 + 1 + kTokenSize;
  if (b.size() > kKindAt && !KnownKind(static_cast<uint8_t>(b[kKindAt]))) {
    return Bad(fmt::format("unknown request kind {}", static_cast<uint8_t>(b[kKindAt])));
  }
  if (b.size() < kRequestFixed) return std::optional<std::pair<Request, size_t>>();
  size_t target_len = Get(b, kRequestFixed - 2, 2);
  if (target_len > kMaxTargetSize) {
    return Bad(fmt::format("a target of {} bytes (at most {})", target_len, kMaxTargetSize));
  }
  if (b.size() < kRequestFixed + target_len) return std::optional<std::pair<Request, size_t>>();
  Request r;
  r.version = static_cast<uint8_t>(b[4]);
  for (size_t i = 0; i < kTokenSize; ++i) r.token[i] = static_cast<uint8_t>(b[5 + i]);
  r.kind = static_cast<Kind>(b[kKindAt]);
  r.arg = Get(b, kKindAt + 1, 8);
  r.target = std::string(b.substr(kRequestFixed, target_len));
  return std::optional<std::pair<Request, size_t>>({std::move(r), kRequestFixed + target_len});
}

StatusOr<std::string> EncodeReply(const Reply& r) {
  if (r.message.size() > kMaxMessageSize) {
    return Bad(
        fmt::format("a reply message of {} bytes (at most {})", r.message.size(), kMaxMessageSize));
  }
  if (static_cast<uint8_t>(r.status) > static_cast<uint8_t>(ReplyStatus::kFailed)) {
    return Bad("unknown reply status");
  }
  std::string out(kReplyMagic);
  Put(&out, static_cast<uint8_t>(r.status), 1);
  Put(&out, r.message.size(), 2);
  out += r.message;
  return out;
}

StatusOr<std::optional<std::pair<Reply, size_t>>> DecodeReply(std::string_view b) {
  if (!MagicSoFar(b, kReplyMagic)) return Bad("not a reply (wrong magic)");
  if (b.size() >= 5 && static_cast<uint8_t>(b[4]) > static_cast<uint8_t>(ReplyStatus::kFailed)) {
    return Bad(fmt::format("unknown reply status {}", static_cast<uint8_t>(b[4])));
  }
  if (b.size() < kReplyFixed) return std::optional<std::pair<Reply, size_t>>();
  size_t len = Get(b, 5, 2);
  if (len > kMaxMessageSize) {
    return Bad(fmt::format("a reply message of {} bytes (at most {})", len, kMaxMessageSize));
  }
  if (b.size() < kReplyFixed + len) return std::optional<std::pair<Reply, size_t>>();
  Reply r;
  r.status = static_cast<ReplyStatus>(b[4]);
  r.message = std::string(b.substr(kReplyFixed, len));
  return std::optional<std::pair<Reply, size_t>>({std::move(r), kReplyFixed + len});
}

StatusOr<std::string> EncodeDatagram(std::string_view payload) {
  if (payload.size() > kMaxDatagramSize) {
    return Bad(
        fmt::format("a datagram of {} bytes (at most {})", payload.size(), kMaxDatagramSize));
  }
  std::string out;
  out.reserve(2 + payload.size());
  Put(&out, payload.size(), 2);
  out += payload;
  return out;
}

StatusOr<std::optional<std::pair<std::string_view, size_t>>> DecodeDatagram(std::string_view b) {
  if (b.size() < 2) return std::optional<std::pair<std::string_view, size_t>>();
  size_t len = Get(b, 0, 2);
  if (b.size() < 2 + len) return std::optional<std::pair<std::string_view, size_t>>();
  return std::optional<std::pair<std::string_view, size_t>>({b.substr(2, len), 2 + len});
}

bool TokensEqual(const Token& a, const Token& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < kTokenSize; ++i) diff |= static_cast<uint8_t>(a[i] ^ b[i]);
  return diff == 0;
}

StatusOr<HostPort> ParseTarget(std::string_view target) {
  auto bad = [&](std::string_view why) {
    return Bad(fmt::format("target \"{}\": {} (expected IP:PORT or [IPv6]:PORT)",
                           target.substr(0, 80), why));
  };
  std::string_view host, port;
  if (!target.empty() && target.front() == '[') {
    auto close = target.find(']');
    if (close == std::string_view::npos || close + 1 >= target.size() || target[close + 1] != ':') {
      return bad("unterminated IPv6 address");
    }
    host = target.substr(1, close - 1);
    port = target.substr(close + 2);
  } else {
    auto colon = target.rfind(':');
    if (colon == std::string_view::npos) return bad("missing port");
    host = target.substr(0, colon);
    port = target.substr(colon + 1);
  }
  auto p = ParseInt(port, "port");
  if (!p.ok() || *p < 1 || *p > 65535) return bad("the port must be 1..65535");
  std::string h(host);
  unsigned char buf[16];
  if (inet_pton(AF_INET, h.c_str(), buf) != 1 && inet_pton(AF_INET6, h.c_str(), buf) != 1) {
    return bad("the host must be an IP address");
  }
  return HostPort{std::move(h), static_cast<uint16_t>(*p)};
}

}  // namespace fun::agent
