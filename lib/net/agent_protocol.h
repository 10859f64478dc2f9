// agent_protocol.h: the pure codec of the agent channel between the host (fun-hostd) and the
// guest (fun-guestd). No sockets, no files: bytes in, messages out, and back.
//
// Every connection the host opens to the guest starts with one Request; the guest answers with
// one Reply; then the connection carries what the request asked for:
//
//   host -> guest  Request  magic "FUNA" | version[1] | token[32] | kind[1] | arg[8]
//                           | target_len[2] | target
//   guest -> host  Reply    magic "FUNR" | status[1] | message_len[2] | message
//   then           kContainerd, kTcp: raw bytes both ways (CRI passes through untouched)
//                  kUdp: datagrams both ways, each as len[2] | payload (see EncodeDatagram)
//                  kLog: the log file's bytes, guest -> host, until it ends (see kLog)
//                  kPing, kShutdown, kTimeSync, kPorts: nothing; the guest closes after the
//                  Reply
//
// Integers are little-endian. The token is the per-instance secret (32 random bytes, handed to
// the guest through QEMU's fw_cfg, never on a command line) and is compared in constant time.
// Bytes from either side are untrusted: every decoder is bounds-checked and fuzzed
// (fuzz/agent_protocol_fuzzer.cc); a bad request ends its connection, nothing else.
//
//   std::string wire = agent::EncodeRequest({.token = tok, .kind = agent::Kind::kContainerd});
//   ... on the guest:
//   FUN_ASSIGN_OR_RETURN(auto got, agent::DecodeRequest(buffered));
//   if (!got) continue;                   // need more bytes
//   auto [request, consumed] = *got;
//
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "lib/base/status.h"

namespace fun::agent {

inline constexpr uint8_t kProtocolVersion = 1;
// The host's vsock port for kP9 streams (fun-hostd's own vsock device; 564 is 9P's IANA port).
inline constexpr uint32_t kHostP9VsockPort = 564;
inline constexpr size_t kTokenSize = 32;
inline constexpr size_t kMaxTargetSize = 1024;
inline constexpr size_t kMaxMessageSize = 16 * 1024;
inline constexpr size_t kMaxDatagramSize = 65535;

using Token = std::array<uint8_t, kTokenSize>;

enum class Kind : uint8_t {
  kPing = 1,        // the guest answers with its state (JSON in Reply::message) and closes
  kContainerd = 2,  // stream to the guest's containerd socket
  kTcp = 3,         // stream to target "IP:PORT" inside the VM
  kUdp = 4,         // datagrams to target "IP:PORT" inside the VM
  kShutdown = 5,    // stop containers, sync, power off; the Reply comes before the power-off
  kTimeSync = 6,    // step the guest clock by arg: signed ns (int64 as two's complement),
                    // the offset the host measured with a kPing, negated
  kLog = 7,         // stream the container log file `target` from offset (arg, see LogArg)
  kPorts = 8,       // report the sockets listening in the VM: lines in Reply::message, in
                    // net::EncodeListenPorts's form (lib/net/listen_ports.h)
  kP9 = 9,          // the other way round: the guest opens a stream to the host's 9P server
                    // (over vsock, lib/vsock/device.h) for the share whose tag is `target`;
                    // after an ok Reply from the host, the stream is 9P. fun-guestd refuses it.
};

// kLog's arg: the byte offset to start from, and whether to follow the file as it grows. A
// followed stream ends when the host half-closes its side (the guest sends what the file holds
// by then and closes) or the file is gone.
inline constexpr uint64_t kLogFollowBit = uint64_t{1} << 63;
inline constexpr uint64_t LogArg(uint64_t offset, bool follow) {
  return (offset & ~kLogFollowBit) | (follow ? kLogFollowBit : 0);
}
std::string_view KindName(Kind kind);

struct Request {
  uint8_t version = kProtocolVersion;
  Token token{};
  Kind kind = Kind::kPing;
  uint64_t arg = 0;
  std::string target;  // "IP:PORT" for kTcp/kUdp; an absolute path for kLog; empty otherwise
  friend bool operator==(const Request&, const Request&) = default;
};

enum class ReplyStatus : uint8_t {
  kOk = 0,
  kBadToken = 1,     // the token did not match: the host has the wrong secret
  kBadRequest = 2,   // unknown kind, bad target, unsupported version
  kUnavailable = 3,  // the target refused or is not up yet (containerd starting)
  kFailed = 4,       // anything else; the message says what
};
std::string_view ReplyStatusName(ReplyStatus s);

struct Reply {
  ReplyStatus status = ReplyStatus::kOk;
  std::string message;  // a one-line reason, the ping's JSON, or kPorts's lines
  friend bool operator==(const Reply&, const Reply&) = default;
};

// Encoders refuse what the decoder would refuse (oversized target/message), so both ends agree.
StatusOr<std::string> EncodeRequest(const Request& r);
StatusOr<std::string> EncodeReply(const Reply& r);

// Incremental decoders over the bytes received so far: nullopt while the message is incomplete,
// the message and the bytes it took once complete, an error as soon as the bytes cannot be one
// (wrong magic, unknown kind, oversized length).
StatusOr<std::optional<std::pair<Request, size_t>>> DecodeRequest(std::string_view buffered);
StatusOr<std::optional<std::pair<Reply, size_t>>> DecodeReply(std::string_view buffered);

// UDP over a stream: len[2] | payload. Payloads of 0 bytes are allowed (UDP allows them).
StatusOr<std::string> EncodeDatagram(std::string_view payload);
StatusOr<std::optional<std::pair<std::string_view, size_t>>> DecodeDatagram(
    std::string_view buffered);

// Constant-time comparison, so a guest-side timing probe learns nothing about the token.
bool TokensEqual(const Token& a, const Token& b);
// "IP:PORT" / "[IPv6]:PORT" -> checked parts; for kTcp/kUdp targets.
struct HostPort {
  std::string host;
  uint16_t port = 0;
};
StatusOr<HostPort> ParseTarget(std::string_view target);

}  // namespace fun::agent
