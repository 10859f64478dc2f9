// stream_codec.h: the pure codec of CRI's streaming exec (what `fun exec -i/-t` speaks to
// containerd's stream server, the URL that RuntimeService.Exec returns). No sockets, no files.
//
// containerd 1.6 vendors Kubernetes' kubelet streaming server, which takes two transports:
// WebSocket (channel.k8s.io subprotocols) and SPDY/3.1 (the one kubectl and crictl use). This
// client speaks SPDY/3.1 because the WebSocket protocols containerd 1.6 knows (up to
// v4.channel.k8s.io) cannot half-close stdin: the only way to tell `cat` that its input ended is
// to close the whole connection, which loses the rest of the output and the exit status
// (Kubernetes added v5.channel.k8s.io with a CLOSE signal for this, after containerd 1.6). With
// SPDY every stream closes on its own (a DATA frame with FLAG_FIN), so
// `echo hi | fun exec -i web cat` prints "hi" and exits with cat's code, as with Docker.
//
// The session (remotecommand protocol v4.channel.k8s.io over SPDY/3.1):
//
//   client: POST /exec/<token> HTTP/1.1   Connection: Upgrade   Upgrade: SPDY/3.1
//           X-Stream-Protocol-Version: v4.channel.k8s.io
//   server: HTTP/1.1 101 Switching Protocols (same Upgrade and X-Stream-Protocol-Version)
//   client: SYN_STREAM per stream, header "streamtype": error, stdin (-i), stdout, stderr (not
//           with a tty), resize (tty only); stdin as DATA frames, its end as FLAG_FIN; terminal
//           sizes as JSON {"Width":W,"Height":H} on the resize stream
//   server: DATA on stdout/stderr; on the error stream one metav1.Status JSON ("Success", or
//           "Failure" with details.causes[{reason:"ExitCode", message:"N"}]); then it closes.
//
// Header blocks are zlib streams (one per direction per connection). The client's block is
// compressed without SPDY's preset dictionary (a zlib stream without FDICT is valid and Go's
// reader accepts it); the server's blocks are never needed (the client only counts replies), so
// they are skipped undecoded. Every decoder is bounded and returns errors, never crashes
// (fuzz/cri_stream_fuzzer.cc).
//
//   FUN_ASSIGN_OR_RETURN(StreamUrl u, ParseStreamUrl(url));
//   send(EncodeUpgradeRequest(u));
//   FUN_ASSIGN_OR_RETURN(auto end, ParseUpgradeResponse(buffered));  // nullopt: read more
//   HeaderCompressor hc;
//   send(EncodeSynStream(hc, 1, {{"streamtype", "error"}}));
//   FrameDecoder d; d.Append(bytes);
//   while (true) { FUN_ASSIGN_OR_RETURN(auto f, d.Next()); if (!f) break; ... }
//
// Thread-safety: free functions are pure; a HeaderCompressor or FrameDecoder belongs to one
// connection and one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/base/status.h"

namespace fun::cri::stream {

inline constexpr std::string_view kProtocolV4 = "v4.channel.k8s.io";
// Bounds on what a peer can make us hold.
inline constexpr size_t kMaxResponseHeaderBytes = 16 * 1024;
inline constexpr size_t kMaxFrameBytes = 1 << 20;     // one frame's payload
inline constexpr size_t kMaxStatusBytes = 64 * 1024;  // the error stream's JSON
inline constexpr size_t kMaxUrlBytes = 4096;

// --- the URL and the HTTP upgrade ---------------------------------------------------------

struct StreamUrl {
  std::string host;  // an IP literal or name, without brackets
  uint16_t port = 80;
  std::string path;  // "/exec/<token>", with any query
};
// "http://HOST:PORT/PATH" (also [IPv6]); https, userinfo and odd bytes are refused.
StatusOr<StreamUrl> ParseStreamUrl(std::string_view url);

// The upgrade request for `url` (POST, SPDY/3.1, protocol kProtocolV4).
std::string EncodeUpgradeRequest(const StreamUrl& url);

// Parses the server's answer from the bytes read so far: nullopt while the header is not
// complete; the header's length (bytes after it are SPDY frames) on a valid 101 with
// Upgrade: SPDY/3.1 and X-Stream-Protocol-Version: v4.channel.k8s.io. Another status is an
// error quoting its status line and the start of its body ("containerd's stream server answered
// 404 Not Found: ..."); a header over kMaxResponseHeaderBytes is an error.
StatusOr<std::optional<size_t>> ParseUpgradeResponse(std::string_view buffered);

// --- SPDY/3 frames --------------------------------------------------------------------------

enum class FrameType : uint16_t {
  kData = 0,  // not a control frame
  kSynStream = 1,
  kSynReply = 2,
  kRstStream = 3,
  kSettings = 4,
  kPing = 6,
  kGoAway = 7,
  kHeaders = 8,
  kWindowUpdate = 9,
};
inline constexpr uint8_t kFlagFin = 0x01;
inline constexpr uint32_t kRstRefusedStream = 3;

struct Frame {
  FrameType type = FrameType::kData;
  uint8_t flags = 0;
  uint32_t stream_id = 0;  // DATA, SYN_*, RST_STREAM, HEADERS, WINDOW_UPDATE; GOAWAY: last good
  uint32_t value = 0;      // RST_STREAM/GOAWAY: status; PING: id; WINDOW_UPDATE: delta
  std::string data;        // DATA: the payload (header blocks are not kept)
  bool fin() const { return (flags & kFlagFin) != 0; }
};

// Compresses header blocks: one zlib stream per connection, flushed after each block.
class HeaderCompressor {
 public:
  HeaderCompressor();
  ~HeaderCompressor();
  HeaderCompressor(const HeaderCompressor&) = delete;
  HeaderCompressor& operator=(const HeaderCompressor&) = delete;
  // The compressed block for these pairs (names must be lower case, as SPDY/3 wants).
  StatusOr<std::string> Compress(const std::vector<std::pair<std::string, std::string>>& headers);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

StatusOr<std::string> EncodeSynStream(
    HeaderCompressor& hc, uint32_t stream_id,
    const std::vector<std::pair<std::string, std::string>>& headers, uint8_t flags = 0);
// A DATA frame; data over kMaxFrameBytes is the caller's bug (split it).
std::string EncodeData(uint32_t stream_id, std::string_view data, bool fin);
std::string EncodePing(uint32_t id);
std::string EncodeRstStream(uint32_t stream_id, uint32_t status);
std::string EncodeWindowUpdate(uint32_t stream_id, uint32_t delta);
std::string EncodeGoAway(uint32_t last_good_stream_id, uint32_t status);

// Splits the server's bytes into frames, incrementally.
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame_bytes = kMaxFrameBytes) : max_(max_frame_bytes) {}
  void Append(std::string_view bytes) { buf_.append(bytes); }
  // The next complete frame, nullopt when more bytes are needed, or an error for a frame that
  // breaks SPDY/3 (another version, a length over the bound, a control frame too short for its
  // fields). After an error the connection is unusable.
  StatusOr<std::optional<Frame>> Next();
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  size_t max_;
  std::string buf_;
  size_t pos_ = 0;
};

// --- the remotecommand payloads -------------------------------------------------------------

// The resize stream's message.
std::string EncodeResize(uint16_t width, uint16_t height);

struct ExitStatus {
  int exit_code = 0;    // 0 for "Success"; the ExitCode cause for a non-zero exit
  bool ran = true;      // false: the command could not run (no exit code; see message)
  std::string message;  // the Status's message for a failure
};
// The error stream's metav1.Status JSON (at most kMaxStatusBytes, nesting bounded).
StatusOr<ExitStatus> ParseExitStatus(std::string_view json);

}  // namespace fun::cri::stream
