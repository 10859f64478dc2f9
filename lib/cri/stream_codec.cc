#include "lib/cri/stream_codec.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

namespace fun::cri::stream {
namespace {

constexpr uint8_t kVersion = 3;
constexpr size_t kHeaderSize = 8;

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Peer text made safe for a one-line message: printable ASCII only, at most `max` bytes.
std::string Printable(std::string_view s, size_t max = 200) {
  std::string out;
  for (char c : s.substr(0, max)) {
    if (c == '\r' || c == '\n' || c == '\t') {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += (c >= 0x20 && c < 0x7f) ? c : '?';
    }
  }
  if (s.size() > max) out += "...";
  return std::string(Trim(out));
}

void PutU32(std::string& out, uint32_t v) {
  out += static_cast<char>(v >> 24);
  out += static_cast<char>(v >> 16);
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v);
}

uint32_t GetU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | u[3];
}

std::string ControlHeader(FrameType type, uint8_t flags, size_t length) {
  std::string h;
  h += static_cast<char>(0x80);
  h += static_cast<char>(kVersion);
  h += static_cast<char>(static_cast<uint16_t>(type) >> 8);
  h += static_cast<char>(static_cast<uint16_t>(type) & 0xff);
  h += static_cast<char>(flags);
  h += static_cast<char>((length >> 16) & 0xff);
  h += static_cast<char>((length >> 8) & 0xff);
  h += static_cast<char>(length & 0xff);
  return h;
}

// The deepest [ / { nesting in `s` (strings skipped), to keep a JSON parser's recursion small.
size_t NestingDepth(std::string_view s) {
  size_t depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max = std::max(max, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max;
}

}  // namespace

// --- URL and upgrade ----------------------------------------------------------------------

StatusOr<StreamUrl> ParseStreamUrl(std::string_view url) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("containerd's streaming URL \"{}\" {}", Printable(url, 120), why));
  };
  if (url.size() > kMaxUrlBytes) return bad("is too long");
  for (char c : url) {
    if (c <= 0x20 || c >= 0x7f) return bad("has a byte that does not belong in a URL");
  }
  constexpr std::string_view kHttp = "http://";
  if (url.substr(0, 8) == "https://") {
    return UnimplementedError(
        "containerd's streaming URL is https: fun speaks plain http to it (set "
        "stream_server to plain http in containerd's CRI config)");
  }
  if (url.substr(0, kHttp.size()) != kHttp) return bad("is not http://HOST:PORT/PATH");
  std::string_view rest = url.substr(kHttp.size());
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  StreamUrl u;
  u.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (authority.find('@') != std::string_view::npos) return bad("has a user name");
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("has an unclosed [IPv6] host");
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("has bytes after its [IPv6] host");
      port = after.substr(1);
    }
  } else {
    const size_t colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) return bad("has no host");
  if (!port.empty()) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || end != port.data() + port.size() || v == 0 || v > 65535) {
      return bad("has a bad port");
    }
    u.port = static_cast<uint16_t>(v);
  }
  return u;
}

std::string EncodeUpgradeRequest(const StreamUrl& url) {
  const std::string host =
      url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  return fmt::format(
      "POST {} HTTP/1.1\r\n"
      "Host: {}:{}\r\n"
      "User-Agent: fun\r\n"
      "Content-Length: 0\r\n"
      "Connection: Upgrade\r\n"
      "Upgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: {}\r\n"
      "\r\n",
      url.path, host, url.port, kProtocolV4);
}

StatusOr<std::optional<size_t>> ParseUpgradeResponse(std::string_view buffered) {
  const size_t end = buffered.substr(0, kMaxResponseHeaderBytes).find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (buffered.size() >= kMaxResponseHeaderBytes) {
      return DataLossError(fmt::format(
          "containerd's stream server sent a reply header over {} bytes", kMaxResponseHeaderBytes));
    }
    return std::optional<size_t>();
  }
  const std::string_view header = buffered.substr(0, end);
  const size_t line_end = header.find("\r\n");
  const std::string_view status_line = header.substr(0, line_end);
  // "HTTP/1.1 101 Switching Protocols"
  if (status_line.substr(0, 5) != "HTTP/" || status_line.size() < 12 ||
      status_line.find(' ') == std::string_view::npos) {
    return DataLossError(fmt::format("containerd's stream server did not answer HTTP: \"{}\"",
                                     Printable(status_line)));
  }
  const std::string_view code = status_line.substr(status_line.find(' ') + 1, 3);
  if (code != "101") {
    return FailedPreconditionError(
        fmt::format("containerd's stream server answered {}{}{}",
                    Printable(status_line.substr(status_line.find(' ') + 1)),
                    buffered.size() > end + 4 ? ": " : "", Printable(buffered.substr(end + 4))));
  }
  bool upgrade = false, protocol = false;
  std::string got_protocol;
  std::string_view lines = line_end == std::string_view::npos ? "" : header.substr(line_end + 2);
  while (!lines.empty()) {
    const size_t nl = lines.find("\r\n");
    const std::string_view line = lines.substr(0, nl);
    lines = nl == std::string_view::npos ? "" : lines.substr(nl + 2);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view name = Trim(line.substr(0, colon));
    const std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsIgnoreCase(name, "Upgrade")) upgrade = EqualsIgnoreCase(value, "SPDY/3.1");
    if (EqualsIgnoreCase(name, "X-Stream-Protocol-Version")) {
      protocol = value == kProtocolV4;
      got_protocol = Printable(value, 60);
    }
  }
  if (!upgrade) {
    return DataLossError("containerd's stream server switched protocols but not to SPDY/3.1");
  }
  if (!protocol) {
    return DataLossError(
        fmt::format("containerd's stream server chose remotecommand protocol \"{}\", not {}",
                    got_protocol, kProtocolV4));
  }
  return std::optional<size_t>(end + 4);
}

// --- frames -------------------------------------------------------------------------------

struct HeaderCompressor::Impl {
  z_stream z{};
  bool ok = false;
  ~Impl() {
    if (ok) deflateEnd(&z);
  }
};

HeaderCompressor::HeaderCompressor() : impl_(std::make_unique<Impl>()) {
  impl_->ok = deflateInit(&impl_->z, Z_DEFAULT_COMPRESSION) == Z_OK;
}

HeaderCompressor::~HeaderCompressor() = default;

StatusOr<std::string> HeaderCompressor::Compress(
    const std::vector<std::pair<std::string, std::string>>& headers) {
  if (!impl_->ok) return InternalError("zlib: deflateInit failed");
  std::string block;
  PutU32(block, static_cast<uint32_t>(headers.size()));
  for (const auto& [name, value] : headers) {
    PutU32(block, static_cast<uint32_t>(name.size()));
    block += name;
    PutU32(block, static_cast<uint32_t>(value.size()));
    block += value;
  }
  std::string out;
  z_stream& z = impl_->z;
  z.next_in = reinterpret_cast<Bytef*>(block.data());
  z.avail_in = static_cast<uInt>(block.size());
  char chunk[4096];
  do {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof(chunk);
    const int rc = deflate(&z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR) return InternalError(fmt::format("zlib: deflate {}", rc));
    out.append(chunk, sizeof(chunk) - z.avail_out);
  } while (z.avail_out == 0);
  return out;
}

StatusOr<std::string> EncodeSynStream(
    HeaderCompressor& hc, uint32_t stream_id,
    const std::vector<std::pair<std::string, std::string>>& headers, uint8_t flags) {
  FUN_ASSIGN_OR_RETURN(std::string block, hc.Compress(headers));
  std::string body;
  PutU32(body, stream_id & 0x7fffffff);
  PutU32(body, 0);  // associated stream
  body += '\0';     // priority (3 bits) + unused
  body += '\0';     // slot
  body += block;
  return ControlHeader(FrameType::kSynStream, flags, body.size()) + body;
}

std::string EncodeData(uint32_t stream_id, std::string_view data, bool fin) {
  std::string f;
  PutU32(f, stream_id & 0x7fffffff);
  f += static_cast<char>(fin ? kFlagFin : 0);
  f += static_cast<char>((data.size() >> 16) & 0xff);
  f += static_cast<char>((data.size() >> 8) & 0xff);
  f += static_cast<char>(data.size() & 0xff);
  f += data;
  return f;
}

std::string EncodePing(uint32_t id) {
  std::string f = ControlHeader(FrameType::kPing, 0, 4);
  PutU32(f, id);
  return f;
}

std::string EncodeRstStream(uint32_t stream_id, uint32_t status) {
  std::string f = ControlHeader(FrameType::kRstStream, 0, 8);
  PutU32(f, stream_id & 0x7fffffff);
  PutU32(f, status);
  return f;
}

std::string EncodeWindowUpdate(uint32_t stream_id, uint32_t delta) {
  std::string f = ControlHeader(FrameType::kWindowUpdate, 0, 8);
  PutU32(f, stream_id & 0x7fffffff);
  PutU32(f, delta & 0x7fffffff);
  return f;
}

std::string EncodeGoAway(uint32_t last_good_stream_id, uint32_t status) {
  std::string f = ControlHeader(FrameType::kGoAway, 0, 8);
  PutU32(f, last_good_stream_id & 0x7fffffff);
  PutU32(f, status);
  return f;
}

StatusOr<std::optional<Frame>> FrameDecoder::Next() {
  if (pos_ > 0 && (pos_ >= buf_.size() || pos_ > 64 * 1024)) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  const std::string_view avail = std::string_view(buf_).substr(pos_);
  if (avail.size() < kHeaderSize) return std::optional<Frame>();
  const auto* h = reinterpret_cast<const unsigned char*>(avail.data());
  const size_t length = (size_t{h[5]} << 16) | (size_t{h[6]} << 8) | h[7];
  if (length > max_) {
    return DataLossError(fmt::format(
        "containerd's stream server sent a {}-byte SPDY frame (the limit is {})", length, max_));
  }
  if (avail.size() < kHeaderSize + length) return std::optional<Frame>();
  const char* p = avail.data() + kHeaderSize;
  Frame f;
  f.flags = h[4];
  if ((h[0] & 0x80) == 0) {
    f.type = FrameType::kData;
    f.stream_id = GetU32(avail.data()) & 0x7fffffff;
    f.data.assign(p, length);
  } else {
    const unsigned version = ((h[0] & 0x7fu) << 8) | h[1];
    if (version != kVersion) {
      return DataLossError(
          fmt::format("containerd's stream server sent a SPDY/{} frame, not SPDY/3", version));
    }
    f.type = static_cast<FrameType>((unsigned{h[2]} << 8) | h[3]);
    size_t need = 0;
    switch (f.type) {
      case FrameType::kSynStream:
        need = 10;
        break;
      case FrameType::kSynReply:
      case FrameType::kHeaders:
      case FrameType::kSettings:
      case FrameType::kPing:
        need = 4;
        break;
      case FrameType::kRstStream:
      case FrameType::kGoAway:
      case FrameType::kWindowUpdate:
        need = 8;
        break;
      default:
        break;  // unknown control frames are ignored, as SPDY/3 says
    }
    if (length < need) {
      return DataLossError(fmt::format(
          "containerd's stream server sent a SPDY control frame of type {} with {} bytes (it "
          "needs {})",
          static_cast<unsigned>(f.type), length, need));
    }
    switch (f.type) {
      case FrameType::kSynStream:
      case FrameType::kSynReply:
      case FrameType::kHeaders:
        f.stream_id = GetU32(p) & 0x7fffffff;
        break;
      case FrameType::kPing:
        f.value = GetU32(p);
        break;
      case FrameType::kRstStream:
      case FrameType::kGoAway:
      case FrameType::kWindowUpdate:
        f.stream_id = GetU32(p) & 0x7fffffff;
        f.value = GetU32(p + 4);
        break;
      default:
        break;
    }
  }
  pos_ += kHeaderSize + length;
  return std::optional<Frame>(std::move(f));
}

// --- payloads -----------------------------------------------------------------------------

std::string EncodeResize(uint16_t width, uint16_t height) {
  return fmt::format("{{\"Width\":{},\"Height\":{}}}", width, height);
}

StatusOr<ExitStatus> ParseExitStatus(std::string_view json) {
  if (json.size() > kMaxStatusBytes) {
    return DataLossError(fmt::format("the exec's status is over {} bytes", kMaxStatusBytes));
  }
  if (NestingDepth(json) > 16) return DataLossError("the exec's status is nested too deeply");
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return DataLossError(
        fmt::format("the exec's status is not a JSON object: \"{}\"", Printable(json, 120)));
  }
  auto str = [](const nlohmann::json& o, const char* key) -> std::string {
    auto it = o.find(key);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string status = str(j, "status");
  if (status == "Success") return ExitStatus{};
  if (status != "Failure") {
    return DataLossError(
        fmt::format("the exec's status is \"{}\", neither Success nor Failure", Printable(status)));
  }
  ExitStatus r;
  r.message = Printable(str(j, "message"), 500);
  auto details = j.find("details");
  if (details != j.end() && details->is_object()) {
    auto causes = details->find("causes");
    if (causes != details->end() && causes->is_array()) {
      for (const nlohmann::json& c : *causes) {
        if (!c.is_object() || str(c, "reason") != "ExitCode") continue;
        const std::string n = str(c, "message");
        int code = 0;
        auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), code);
        if (ec != std::errc() || end != n.data() + n.size() || code < 0 || code > 255) {
          return DataLossError(
              fmt::format("the exec's status has exit code \"{}\"", Printable(n, 40)));
        }
        r.exit_code = code;
        r.ran = true;
        return r;
      }
    }
  }
  r.ran = false;
  if (r.message.empty()) r.message = "the command failed without an exit code";
  return r;
}

}  // namespace fun::cri::stream
