#include "lib/base/instance_config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fun {
namespace {

// Parsing keeps document order, so "the first error" means the first one a reader meets.
using OJson = nlohmann::ordered_json;

constexpr std::string_view kBackendNames[] = {"qemu", "hyperkit", "native"};
constexpr std::string_view kAccelNames[] = {"auto", "kvm", "hvf", "tcg", "none"};
constexpr std::string_view kProtocolNames[] = {"tcp", "udp"};

constexpr std::string_view kTopKeys[] = {
    "name",   "backend", "accel",        "cpus",        "memory_mib",      "disk_gib",
    "shares", "ports",   "auto_forward", "tcg_threads", "share_transport", "agent_transport"};
constexpr std::string_view kShareKeys[] = {"host_path", "guest_path", "read_only", "tag", "cache"};
constexpr std::string_view kCacheExpected = R"("mmap", "loose" or "none")";
constexpr std::string_view kPortKeys[] = {"host_ip", "host_port", "guest_port", "protocol"};

constexpr std::string_view kTopExpected = R"(an object such as {"cpus": 4})";
constexpr std::string_view kNameExpected =
    R"(a name of 1 to 32 characters from a-z, 0-9, "_" and "-", starting with a-z or 0-9)";
constexpr std::string_view kSharesExpected = R"(an array of objects such as {"host_path": "/src"})";
constexpr std::string_view kShareExpected =
    R"(an object such as {"host_path": "/src", "read_only": true})";
constexpr std::string_view kHostPathExpected =
    R"(an absolute path (starting with "/") without "." or ".." components)";
constexpr std::string_view kGuestPathExpected =
    R"(an absolute path other than "/", without "." or ".." components)";
constexpr std::string_view kReadOnlyExpected = "true or false";
constexpr std::string_view kTagExpected =
    R"(a tag of 1 to 31 characters from a-z, 0-9, "_" and "-")";
constexpr std::string_view kPortsExpected =
    R"(an array of objects such as {"host_port": 8080, "guest_port": 80})";
constexpr std::string_view kPortExpected =
    R"(an object such as {"host_port": 8080, "guest_port": 80, "protocol": "tcp"})";
constexpr std::string_view kHostIpExpected =
    R"(an IPv4 or IPv6 address such as "127.0.0.1", "0.0.0.0" or "::1")";
constexpr std::string_view kUniquePortExpected =
    "expected each host address, port and protocol at most once";
constexpr std::string_view kPortSpecExpected =
    "expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp], such as 8080:80, "
    "127.0.0.1:8080:80/udp or [::1]:8080:80";

// Values longer than this are cut ("...") in error messages, which stay one short line.
constexpr size_t kMaxRenderedValue = 60;
// config.json is small; a larger file is a mistake (or hostile), not something to slurp.
constexpr size_t kMaxConfigFileBytes = 1 << 20;

// --- Text helpers -------------------------------------------------------------------------

bool IsContinuationByte(unsigned char c) { return (c & 0xC0) == 0x80; }

// Cuts `s` to at most `n` bytes without splitting a UTF-8 character.
void TruncateUtf8(std::string& s, size_t n) {
  if (s.size() <= n) return;
  while (n > 0 && IsContinuationByte(static_cast<unsigned char>(s[n]))) --n;
  s.resize(n);
}

// Keeps valid UTF-8 and replaces every other byte with "\xNN", so a message stays printable.
std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
    }
    bool valid = len > 0 && i + len <= s.size();
    for (size_t k = 1; valid && k < len; ++k) {
      valid = IsContinuationByte(static_cast<unsigned char>(s[i + k]));
    }
    if (valid) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += fmt::format("\\x{:02X}", c);
      ++i;
    }
  }
  return out;
}

// `s` as a JSON string literal (invalid UTF-8 replaced by U+FFFD).
std::string Quote(std::string_view s) {
  return OJson(std::string(s)).dump(-1, ' ', false, OJson::error_handler_t::replace);
}

void RenderInto(const OJson& v, std::string& out) {
  if (out.size() > kMaxRenderedValue) return;
  if (v.is_object() || v.is_array()) {
    const bool is_object = v.is_object();
    out += is_object ? '{' : '[';
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (out.size() > kMaxRenderedValue) return;  // Bounds the recursion too.
      if (!first) out += ',';
      first = false;
      if (is_object) {
        out += Quote(it.key());
        out += ':';
      }
      RenderInto(it.value(), out);
    }
    out += is_object ? '}' : ']';
    return;
  }
  out += v.dump(-1, ' ', false, OJson::error_handler_t::replace);
}

// `v` as compact JSON for an error message, cut at kMaxRenderedValue bytes.
std::string Render(const OJson& v) {
  std::string out;
  RenderInto(v, out);
  if (out.size() > kMaxRenderedValue) {
    TruncateUtf8(out, kMaxRenderedValue);
    out += "...";
  }
  return out;
}

std::string RenderString(std::string_view s) { return Render(OJson(std::string(s))); }

// "a string", "an integer", ... for "<value> is <kind>".
std::string_view KindOf(const OJson& v) {
  switch (v.type()) {
    case OJson::value_t::object:
      return "an object";
    case OJson::value_t::array:
      return "an array";
    case OJson::value_t::string:
      return "a string";
    case OJson::value_t::boolean:
      return "a boolean";
    case OJson::value_t::number_integer:
    case OJson::value_t::number_unsigned:
      return "an integer";
    case OJson::value_t::number_float:
      return "a floating-point number";
    default:
      return "not a plain JSON value";
  }
}

char ToLowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Optimal string alignment distance (Levenshtein plus adjacent transpositions), ignoring
// ASCII case.
size_t EditDistance(std::string_view a, std::string_view b) {
  const size_t n = a.size();
  const size_t m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = ToLowerAscii(a[i - 1]) == ToLowerAscii(b[j - 1]) ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && ToLowerAscii(a[i - 1]) == ToLowerAscii(b[j - 2]) &&
          ToLowerAscii(a[i - 2]) == ToLowerAscii(b[j - 1])) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

// The candidate closest to `word` within edit distance 2 (and at most half the candidate's
// length, so "ab" does not suggest "tag"); ties go to the earlier candidate.
std::optional<std::string_view> Suggest(std::string_view word,
                                        std::span<const std::string_view> candidates) {
  std::optional<std::string_view> best;
  size_t best_distance = 3;
  for (std::string_view c : candidates) {
    const size_t longer = std::max(word.size(), c.size());
    const size_t shorter = std::min(word.size(), c.size());
    if (longer - shorter > 2) continue;
    const size_t d = EditDistance(word, c);
    if (d < best_distance && 2 * d <= c.size()) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

// `one of "a", "b", "c"`.
std::string OneOf(std::span<const std::string_view> names) {
  std::string out = "one of ";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ", ";
    out += Quote(names[i]);
  }
  return out;
}

std::string DidYouMean(std::string_view word, std::span<const std::string_view> candidates) {
  auto s = Suggest(word, candidates);
  return s ? fmt::format(" (did you mean {}?)", Quote(*s)) : std::string();
}

// "<what> is not a known <kind>, expected one of ... (did you mean ...?)".
Status UnknownNameError(std::string_view name, std::string_view kind,
                        std::span<const std::string_view> names) {
  return InvalidArgumentError(fmt::format("{} is not a known {}, expected {}{}", RenderString(name),
                                          kind, OneOf(names), DidYouMean(name, names)));
}

// --- Error constructors -------------------------------------------------------------------

Status FieldError(std::string_view path, std::string_view rendered_value, std::string_view problem,
                  std::string_view expected) {
  return InvalidArgumentError(
      fmt::format("{}: {} {}, expected {}", path, rendered_value, problem, expected));
}

Status TypeError(std::string_view path, const OJson& v, std::string_view expected) {
  if (v.is_null()) {
    return InvalidArgumentError(fmt::format("{}: got null, expected {}", path, expected));
  }
  return FieldError(path, Render(v), fmt::format("is {}", KindOf(v)), expected);
}

Status MissingError(std::string_view path, std::string_view expected) {
  return InvalidArgumentError(fmt::format("{}: missing, expected {}", path, expected));
}

std::string IntRangeExpected(int64_t min, int64_t max) {
  return fmt::format("an integer from {} to {}", min, max);
}

Status CheckIntRange(std::string_view path, int64_t v, int64_t min, int64_t max) {
  if (v >= min && v <= max) return OkStatus();
  return FieldError(path, std::to_string(v), "is out of range", IntRangeExpected(min, max));
}

// --- Field rules (shared by the JSON decoder and NormalizeInstanceConfig) ----------------

bool IsTagChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// "" when `path` is acceptable, else what is wrong with it ("is a relative path").
std::string PathProblem(std::string_view path, bool is_guest) {
  if (path.empty()) return "is empty";
  if (path.find('\0') != std::string_view::npos) return "contains a NUL character";
  if (path.size() > kMaxSharePathLength) {
    return fmt::format("is longer than {} bytes", kMaxSharePathLength);
  }
  if (path.front() != '/') return "is a relative path";
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view component = path.substr(start, end - start);
    if (component == "." || component == "..") {
      return fmt::format("contains a {} component", Quote(component));
    }
    start = end + 1;
  }
  if (is_guest && path.find_first_not_of('/') == std::string_view::npos) {
    return "is the root of the VM";
  }
  return "";
}

Status CheckPath(std::string_view key_path, std::string_view path, bool is_guest) {
  const std::string problem = PathProblem(path, is_guest);
  if (problem.empty()) return OkStatus();
  return FieldError(key_path, RenderString(path), problem,
                    is_guest ? kGuestPathExpected : kHostPathExpected);
}

Status CheckTag(std::string_view key_path, std::string_view tag) {
  if (!tag.empty() && tag.size() <= kMaxShareTagLength &&
      std::all_of(tag.begin(), tag.end(), IsTagChar)) {
    return OkStatus();
  }
  return FieldError(key_path, RenderString(tag), "is not a valid tag", kTagExpected);
}

// An IP address in binary form, for comparing "::1" with "0:0::1".
struct IpAddress {
  int family = 0;
  std::array<unsigned char, 16> bytes{};
  bool IsUnspecified() const {
    return std::all_of(bytes.begin(), bytes.end(), [](unsigned char b) { return b == 0; });
  }
  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

std::optional<IpAddress> ParseIp(std::string_view text) {
  if (text.empty() || text.find('\0') != std::string_view::npos || text.size() > 64) {
    return std::nullopt;
  }
  const std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = AF_INET;
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = AF_INET6;
    return ip;
  }
  return std::nullopt;
}

Status CheckHostIp(std::string_view key_path, std::string_view ip) {
  if (ParseIp(ip)) return OkStatus();
  return FieldError(key_path, RenderString(ip), "is not an IP address", kHostIpExpected);
}

// Lexically cleaned path for comparisons: "//a//b/" -> "/a/b".
std::string CleanPath(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out += c;
  }
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// A readable tag from a host path: "/Users/alice" -> "users-alice", at most 31 characters
// (keeping the end, the most specific part); "root" for "/".
std::string TagBaseFromPath(std::string_view path) {
  std::string tag;
  for (char c : path) {
    c = ToLowerAscii(c);
    if (!IsTagChar(c)) c = '-';
    if (c == '-' && (tag.empty() || tag.back() == '-')) continue;
    tag += c;
  }
  while (!tag.empty() && tag.back() == '-') tag.pop_back();
  if (tag.size() > kMaxShareTagLength) tag.erase(0, tag.size() - kMaxShareTagLength);
  while (!tag.empty() && tag.front() == '-') tag.erase(0, 1);
  if (tag.empty()) tag = "root";
  return tag;
}

// TagBaseFromPath, made unique against `taken` with "-2", "-3", ...
std::string UniqueTag(std::string_view path, const std::set<std::string>& taken) {
  std::string base = TagBaseFromPath(path);
  if (!taken.contains(base)) return base;
  for (size_t n = 2;; ++n) {
    const std::string suffix = fmt::format("-{}", n);
    std::string candidate = base;
    if (candidate.size() + suffix.size() > kMaxShareTagLength) {
      candidate.erase(0, candidate.size() + suffix.size() - kMaxShareTagLength);
    }
    candidate += suffix;
    if (!taken.contains(candidate)) return candidate;
  }
}

bool IsValidEnum(Backend b) { return BackendName(b) != "unknown"; }
bool IsValidEnum(Accel a) { return AccelName(a) != "unknown"; }
bool IsValidEnum(Protocol p) { return ProtocolName(p) != "unknown"; }

template <typename Enum>
Status CheckEnum(std::string_view key_path, Enum value, std::string_view kind,
                 std::span<const std::string_view> names) {
  if (IsValidEnum(value)) return OkStatus();
  return FieldError(key_path, std::to_string(static_cast<int>(value)),
                    fmt::format("is not a known {}", kind), OneOf(names));
}

std::vector<std::string_view> AccelNamesFor(Backend backend) {
  std::vector<std::string_view> names;
  for (Accel a : {Accel::kAuto, Accel::kKvm, Accel::kHvf, Accel::kTcg, Accel::kNone}) {
    if (IsAccelSupported(backend, a)) names.push_back(AccelName(a));
  }
  return names;
}

// Per-field checks of an InstanceConfig, in the documented order (step 5).
// `value` must be one of `allowed`: `field: "x" is not <what>, expected "a" or "b"`.
Status CheckChoice(std::string_view field, const std::string& value, std::string_view what,
                   std::initializer_list<std::string_view> allowed) {
  for (std::string_view a : allowed) {
    if (value == a) return OkStatus();
  }
  std::vector<std::string> quoted;
  for (std::string_view a : allowed) quoted.push_back(fmt::format("\"{}\"", a));
  return InvalidArgumentError(fmt::format(R"({}: "{}" is not {}, expected {})", field, value, what,
                                          fmt::join(quoted, " or ")));
}

Status CheckTransports(const InstanceConfig& c) {
  FUN_RETURN_IF_ERROR(
      CheckChoice("share_transport", c.share_transport, "a share transport", {"serial", "vsock"}));
  return CheckChoice("agent_transport", c.agent_transport, "an agent transport", {"tcp", "vsock"});
}

Status CheckFields(const InstanceConfig& c) {
  FUN_RETURN_IF_ERROR_CTX(ValidateInstanceName(c.name), "name");
  FUN_RETURN_IF_ERROR(CheckEnum("backend", c.backend, "backend", kBackendNames));
  FUN_RETURN_IF_ERROR(CheckEnum("accel", c.accel, "accelerator", kAccelNames));
  FUN_RETURN_IF_ERROR(CheckIntRange("cpus", c.cpus, kMinCpus, kMaxCpus));
  FUN_RETURN_IF_ERROR(CheckIntRange("memory_mib", c.memory_mib, kMinMemoryMib, kMaxMemoryMib));
  FUN_RETURN_IF_ERROR(CheckIntRange("disk_gib", c.disk_gib, kMinDiskGib, kMaxDiskGib));
  if (auto ranges = ParsePortRanges(c.auto_forward); !ranges.ok()) {
    return ranges.status().WithContext("auto_forward");
  }
  FUN_RETURN_IF_ERROR(
      CheckChoice("tcg_threads", c.tcg_threads, "a TCG threading mode", {"single", "multi"}));
  FUN_RETURN_IF_ERROR(CheckTransports(c));
  for (size_t i = 0; i < c.shares.size(); ++i) {
    const Share& s = c.shares[i];
    const std::string at = fmt::format("shares[{}]", i);
    FUN_RETURN_IF_ERROR(CheckPath(at + ".host_path", s.host_path, /*is_guest=*/false));
    if (!s.guest_path.empty()) {
      FUN_RETURN_IF_ERROR(CheckPath(at + ".guest_path", s.guest_path, /*is_guest=*/true));
    }
    if (!s.tag.empty()) FUN_RETURN_IF_ERROR(CheckTag(at + ".tag", s.tag));
  }
  for (size_t i = 0; i < c.ports.size(); ++i) {
    const PortForward& p = c.ports[i];
    const std::string at = fmt::format("ports[{}]", i);
    FUN_RETURN_IF_ERROR(CheckHostIp(at + ".host_ip", p.host_ip));
    FUN_RETURN_IF_ERROR(CheckIntRange(at + ".host_port", p.host_port, 1, 65535));
    FUN_RETURN_IF_ERROR(CheckIntRange(at + ".guest_port", p.guest_port, 1, 65535));
    FUN_RETURN_IF_ERROR(CheckEnum(at + ".protocol", p.protocol, "protocol", kProtocolNames));
  }
  return OkStatus();
}

// Cross-field checks (step 6). Shares must have their guest_path filled in; tags may be empty.
Status CheckCrossFields(const InstanceConfig& c) {
  if (!IsAccelSupported(c.backend, c.accel)) {
    return FieldError("accel", Quote(AccelName(c.accel)),
                      fmt::format("is not supported by backend {}", Quote(BackendName(c.backend))),
                      OneOf(AccelNamesFor(c.backend)));
  }
  for (size_t i = 0; i < c.shares.size(); ++i) {
    const Share& s = c.shares[i];
    for (size_t j = 0; j < i; ++j) {
      if (CleanPath(c.shares[j].guest_path) == CleanPath(s.guest_path)) {
        return FieldError(fmt::format("shares[{}].guest_path", i), RenderString(s.guest_path),
                          fmt::format("is already used by shares[{}]", j),
                          "a different guest path for each share");
      }
      if (!s.tag.empty() && c.shares[j].tag == s.tag) {
        return FieldError(fmt::format("shares[{}].tag", i), RenderString(s.tag),
                          fmt::format("is already used by shares[{}]", j),
                          "a different tag for each share");
      }
    }
  }
  for (size_t i = 0; i < c.ports.size(); ++i) {
    const PortForward& p = c.ports[i];
    const IpAddress ip = *ParseIp(p.host_ip);  // CheckFields ran first.
    for (size_t j = 0; j < i; ++j) {
      const PortForward& q = c.ports[j];
      const IpAddress other = *ParseIp(q.host_ip);
      if (q.host_port != p.host_port || q.protocol != p.protocol || other.family != ip.family) {
        continue;
      }
      const bool wildcard = ip.IsUnspecified() || other.IsUnspecified();
      if (!(ip == other) && !wildcard) continue;
      return InvalidArgumentError(fmt::format(
          "ports[{}].host_port: {} on {}/{} conflicts with ports[{}] ({}), {}{}", i, p.host_port,
          p.host_ip, ProtocolName(p.protocol), j, FormatPortSpec(q), kUniquePortExpected,
          wildcard && !(ip == other) ? " (0.0.0.0 and :: stand for every address)" : ""));
    }
  }
  return OkStatus();
}

// --- JSON decoding ------------------------------------------------------------------------

// "a", "a.b", "a[3].b" for error messages; odd keys are quoted: a["x y"].
std::string PathKey(std::string_view key) {
  const bool plain =
      !key.empty() && key.size() <= 40 && std::all_of(key.begin(), key.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
      });
  return plain ? std::string(key) : "[" + RenderString(key) + "]";
}

std::string JoinPath(std::string_view parent, std::string_view key) {
  const std::string k = PathKey(key);
  if (parent.empty() || k.front() == '[') return std::string(parent) + k;
  return std::string(parent) + "." + k;
}

std::string Location(std::string_view path) {
  return path.empty() ? "at top level" : fmt::format("in {}", path);
}

Status CheckKeys(const OJson& object, std::string_view path,
                 std::span<const std::string_view> known) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string& key = it.key();
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    auto suggestion = Suggest(key, known);
    if (suggestion) {
      return InvalidArgumentError(fmt::format("unknown key {} {} (did you mean {}?)",
                                              RenderString(key), Location(path),
                                              Quote(*suggestion)));
    }
    return InvalidArgumentError(fmt::format("unknown key {} {}, expected {}", RenderString(key),
                                            Location(path), OneOf(known)));
  }
  return OkStatus();
}

const OJson* Find(const OJson& object, std::string_view key) {
  auto it = object.find(std::string(key));
  return it == object.end() ? nullptr : &*it;
}

StatusOr<std::string> DecodeString(const OJson& v, std::string_view path,
                                   std::string_view expected) {
  if (!v.is_string()) return TypeError(path, v, expected);
  return v.get<std::string>();
}

StatusOr<int64_t> DecodeInt(const OJson& v, std::string_view path, int64_t min, int64_t max) {
  if (!v.is_number_integer()) return TypeError(path, v, IntRangeExpected(min, max));
  if (v.is_number_unsigned() &&
      v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return FieldError(path, Render(v), "is out of range", IntRangeExpected(min, max));
  }
  const auto n = v.get<int64_t>();
  FUN_RETURN_IF_ERROR(CheckIntRange(path, n, min, max));
  return n;
}

template <typename Enum>
StatusOr<Enum> DecodeEnum(const OJson& v, std::string_view path,
                          StatusOr<Enum> (*parse)(std::string_view),
                          std::span<const std::string_view> names) {
  if (!v.is_string()) return TypeError(path, v, OneOf(names));
  StatusOr<Enum> e = parse(v.get_ref<const std::string&>());
  if (!e.ok()) return e.status().WithContext(path);
  return e;
}

Status DecodeShare(const OJson& v, const std::string& at, Share* out) {
  if (!v.is_object()) return TypeError(at, v, kShareExpected);
  FUN_RETURN_IF_ERROR(CheckKeys(v, at, kShareKeys));
  const std::string host_path_at = at + ".host_path";
  const OJson* host_path = Find(v, "host_path");
  if (host_path == nullptr) return MissingError(host_path_at, kHostPathExpected);
  FUN_ASSIGN_OR_RETURN(out->host_path, DecodeString(*host_path, host_path_at, kHostPathExpected));
  FUN_RETURN_IF_ERROR(CheckPath(host_path_at, out->host_path, /*is_guest=*/false));
  if (const OJson* guest_path = Find(v, "guest_path")) {
    const std::string guest_path_at = at + ".guest_path";
    FUN_ASSIGN_OR_RETURN(out->guest_path,
                         DecodeString(*guest_path, guest_path_at, kGuestPathExpected));
    FUN_RETURN_IF_ERROR(CheckPath(guest_path_at, out->guest_path, /*is_guest=*/true));
  }
  if (const OJson* read_only = Find(v, "read_only")) {
    if (!read_only->is_boolean())
      return TypeError(at + ".read_only", *read_only, kReadOnlyExpected);
    out->read_only = read_only->get<bool>();
  }
  if (const OJson* tag = Find(v, "tag")) {
    FUN_ASSIGN_OR_RETURN(out->tag, DecodeString(*tag, at + ".tag", kTagExpected));
    FUN_RETURN_IF_ERROR(CheckTag(at + ".tag", out->tag));
  }
  if (const OJson* cache = Find(v, "cache")) {
    FUN_ASSIGN_OR_RETURN(out->cache, DecodeString(*cache, at + ".cache", kCacheExpected));
    if (out->cache != "mmap" && out->cache != "loose" && out->cache != "none") {
      return FieldError(at + ".cache", RenderString(out->cache), "is not a cache mode",
                        kCacheExpected);
    }
  }
  return OkStatus();
}

Status DecodePort(const OJson& v, const std::string& at, PortForward* out) {
  if (!v.is_object()) return TypeError(at, v, kPortExpected);
  FUN_RETURN_IF_ERROR(CheckKeys(v, at, kPortKeys));
  if (const OJson* host_ip = Find(v, "host_ip")) {
    FUN_ASSIGN_OR_RETURN(out->host_ip, DecodeString(*host_ip, at + ".host_ip", kHostIpExpected));
    FUN_RETURN_IF_ERROR(CheckHostIp(at + ".host_ip", out->host_ip));
  }
  for (auto [key, field] :
       {std::pair{"host_port", &out->host_port}, std::pair{"guest_port", &out->guest_port}}) {
    const std::string field_at = fmt::format("{}.{}", at, key);
    const OJson* port = Find(v, key);
    if (port == nullptr) return MissingError(field_at, IntRangeExpected(1, 65535));
    FUN_ASSIGN_OR_RETURN(int64_t n, DecodeInt(*port, field_at, 1, 65535));
    *field = static_cast<uint16_t>(n);
  }
  if (const OJson* protocol = Find(v, "protocol")) {
    FUN_ASSIGN_OR_RETURN(out->protocol, DecodeEnum<Protocol>(*protocol, at + ".protocol",
                                                             &ParseProtocol, kProtocolNames));
  }
  return OkStatus();
}

template <typename T>
Status DecodeArray(const OJson& root, std::string_view key, std::string_view expected,
                   Status (*decode)(const OJson&, const std::string&, T*), std::vector<T>* out) {
  const OJson* array = Find(root, key);
  if (array == nullptr) return OkStatus();
  if (!array->is_array()) return TypeError(key, *array, expected);
  out->clear();
  for (size_t i = 0; i < array->size(); ++i) {
    T element;
    FUN_RETURN_IF_ERROR(decode((*array)[i], fmt::format("{}[{}]", key, i), &element));
    out->push_back(std::move(element));
  }
  return OkStatus();
}

StatusOr<InstanceConfig> DecodeConfig(const OJson& root, const InstanceConfig& defaults) {
  FUN_RETURN_IF_ERROR(CheckKeys(root, "", kTopKeys));
  InstanceConfig c = defaults;
  if (const OJson* name = Find(root, "name")) {
    FUN_ASSIGN_OR_RETURN(c.name, DecodeString(*name, "name", kNameExpected));
    FUN_RETURN_IF_ERROR_CTX(ValidateInstanceName(c.name), "name");
  }
  if (const OJson* backend = Find(root, "backend")) {
    FUN_ASSIGN_OR_RETURN(c.backend,
                         DecodeEnum<Backend>(*backend, "backend", &ParseBackend, kBackendNames));
  }
  if (const OJson* accel = Find(root, "accel")) {
    FUN_ASSIGN_OR_RETURN(c.accel, DecodeEnum<Accel>(*accel, "accel", &ParseAccel, kAccelNames));
  }
  for (auto [key, field, min, max] :
       {std::tuple{"cpus", &c.cpus, kMinCpus, kMaxCpus},
        std::tuple{"memory_mib", &c.memory_mib, kMinMemoryMib, kMaxMemoryMib},
        std::tuple{"disk_gib", &c.disk_gib, kMinDiskGib, kMaxDiskGib}}) {
    if (const OJson* v = Find(root, key)) {
      FUN_ASSIGN_OR_RETURN(int64_t n, DecodeInt(*v, key, min, max));
      *field = static_cast<int>(n);
    }
  }
  FUN_RETURN_IF_ERROR(DecodeArray<Share>(root, "shares", kSharesExpected, &DecodeShare, &c.shares));
  FUN_RETURN_IF_ERROR(
      DecodeArray<PortForward>(root, "ports", kPortsExpected, &DecodePort, &c.ports));
  if (const OJson* af = Find(root, "auto_forward")) {
    FUN_ASSIGN_OR_RETURN(c.auto_forward,
                         DecodeString(*af, "auto_forward", R"("all", "off" or "3000,8000-8999")"));
  }
  if (const OJson* t = Find(root, "tcg_threads")) {
    FUN_ASSIGN_OR_RETURN(c.tcg_threads, DecodeString(*t, "tcg_threads", R"("single" or "multi")"));
  }
  if (const OJson* t = Find(root, "share_transport")) {
    FUN_ASSIGN_OR_RETURN(c.share_transport,
                         DecodeString(*t, "share_transport", R"("serial" or "vsock")"));
  }
  if (const OJson* t = Find(root, "agent_transport")) {
    FUN_ASSIGN_OR_RETURN(c.agent_transport,
                         DecodeString(*t, "agent_transport", R"("tcp" or "vsock")"));
  }
  return NormalizeInstanceConfig(std::move(c));
}

// Finds the first key repeated within one object while nlohmann parses (it would silently
// keep the last value). Fed by the parser callback; remembers the path of containers.
class DuplicateKeyFinder {
 public:
  void OnEvent(OJson::parse_event_t event, const OJson& parsed) {
    if (error_) return;
    using E = OJson::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        CountArrayElement();
        stack_.emplace_back();
        stack_.back().is_array = event == E::array_start;
        break;
      case E::object_end:
      case E::array_end:
        if (!stack_.empty()) stack_.pop_back();
        break;
      case E::key: {
        if (stack_.empty() || !parsed.is_string()) break;
        Frame& frame = stack_.back();
        frame.key = parsed.get<std::string>();
        if (!frame.keys.insert(frame.key).second) {
          error_ =
              InvalidArgumentError(fmt::format("duplicate key {} {}, expected each key once",
                                               RenderString(frame.key), Location(ParentPath())));
        }
        break;
      }
      case E::value:
        CountArrayElement();
        break;
    }
  }

  const std::optional<Status>& error() const { return error_; }

 private:
  struct Frame {
    bool is_array = false;
    size_t elements = 0;         // Arrays: elements seen so far.
    std::string key;             // Objects: the key being parsed.
    std::set<std::string> keys;  // Objects: keys seen so far.
  };

  void CountArrayElement() {
    if (!stack_.empty() && stack_.back().is_array) ++stack_.back().elements;
  }

  // The path of the innermost container ("" for the top level).
  std::string ParentPath() const {
    std::string path;
    for (size_t i = 0; i + 1 < stack_.size(); ++i) {
      const Frame& f = stack_[i];
      path = f.is_array ? fmt::format("{}[{}]", path, f.elements - 1) : JoinPath(path, f.key);
    }
    return path;
  }

  std::vector<Frame> stack_;
  std::optional<Status> error_;
};

// "config.json:3:14: malformed JSON: <what>" from nlohmann's byte count.
Status MalformedJsonError(std::string_view text, std::string_view source_name,
                          const nlohmann::json::parse_error& e) {
  // e.byte counts the characters read, the offending one included (one past the end at EOF).
  const size_t offset = std::min<size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
  size_t line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  size_t column = 1;
  for (size_t i = line_start; i < offset; ++i) {
    if (!IsContinuationByte(static_cast<unsigned char>(text[i]))) ++column;
  }
  // what() is "[json.exception.parse_error.101] parse error at line 3, column 14: <detail>".
  std::string_view what = e.what();
  const size_t at = what.find("parse error");
  const size_t colon = at == std::string_view::npos ? at : what.find(": ", at);
  if (colon != std::string_view::npos) what.remove_prefix(colon + 2);
  return InvalidArgumentError(
      fmt::format("{}:{}:{}: malformed JSON: {}", source_name, line, column, SanitizeUtf8(what)));
}

// ParseInstanceConfig, prefixing the errors after the syntax check with "<source_name>: " when
// `prefix_all` (file errors all start with the path).
StatusOr<InstanceConfig> ParseImpl(std::string_view json_text, const InstanceConfig& defaults,
                                   std::string_view source_name, bool prefix_all) {
  DuplicateKeyFinder duplicates;
  OJson root;
  try {
    root = OJson::parse(
        json_text,
        [&duplicates](int /*depth*/, OJson::parse_event_t event, OJson& parsed) {
          duplicates.OnEvent(event, parsed);
          return true;
        },
        /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::parse_error& e) {
    return MalformedJsonError(json_text, source_name, e);
  } catch (const nlohmann::json::exception& e) {
    // Not positioned, e.g. out_of_range.406 "number overflow parsing '1e999'".
    std::string_view what = e.what();
    if (const size_t end = what.find("] "); end != std::string_view::npos) {
      what.remove_prefix(end + 2);
    }
    return InvalidArgumentError(
        fmt::format("{}: malformed JSON: {}", source_name, SanitizeUtf8(what)));
  }
  const std::string_view prefix = prefix_all ? source_name : std::string_view();
  if (!root.is_object()) return TypeError("top level", root, kTopExpected).WithContext(prefix);
  if (duplicates.error()) return duplicates.error()->WithContext(prefix);
  StatusOr<InstanceConfig> config = DecodeConfig(root, defaults);
  if (!config.ok()) return config.status().WithContext(prefix);
  return config;
}

template <typename Json>
Json BuildJson(const InstanceConfig& c) {
  Json j = Json::object();
  j["name"] = c.name;
  j["backend"] = std::string(BackendName(c.backend));
  j["accel"] = std::string(AccelName(c.accel));
  j["cpus"] = c.cpus;
  j["memory_mib"] = c.memory_mib;
  j["disk_gib"] = c.disk_gib;
  Json shares = Json::array();
  for (const Share& s : c.shares) {
    Json o = Json::object();
    o["host_path"] = s.host_path;
    if (!s.guest_path.empty()) o["guest_path"] = s.guest_path;
    o["read_only"] = s.read_only;
    if (!s.tag.empty()) o["tag"] = s.tag;
    if (s.cache != "mmap") o["cache"] = s.cache;
    shares.push_back(std::move(o));
  }
  j["shares"] = std::move(shares);
  Json ports = Json::array();
  for (const PortForward& p : c.ports) {
    Json o = Json::object();
    o["host_ip"] = p.host_ip;
    o["host_port"] = p.host_port;
    o["guest_port"] = p.guest_port;
    o["protocol"] = std::string(ProtocolName(p.protocol));
    ports.push_back(std::move(o));
  }
  j["ports"] = std::move(ports);
  j["auto_forward"] = c.auto_forward;
  j["tcg_threads"] = c.tcg_threads;
  j["share_transport"] = c.share_transport;
  j["agent_transport"] = c.agent_transport;
  return j;
}

// Closes a file descriptor on scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  // Closes now, reporting the error (close can report a failed deferred write).
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

StatusOr<std::string> ReadSmallFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, path);
  FdCloser closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, path);
  if (!S_ISREG(st.st_mode)) return InvalidArgumentError(path + ": not a regular file");
  std::string text;
  char buf[16384];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, path);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxConfigFileBytes) {
      return InvalidArgumentError(fmt::format(
          "{}: larger than {} bytes, too large for a config file", path, kMaxConfigFileBytes));
    }
  }
  return text;
}

Status WriteAll(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, what);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return OkStatus();
}

// Writes `text` to a new temporary file next to `path` and renames it over `path`.
Status WriteFileAtomically(const std::string& path, std::string_view text) {
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = ::mkstemp(tmp.data());  // Mode 0600.
  if (fd < 0) return ErrnoError(errno, "creating a temporary file in " + dir);
  FdCloser closer(fd);
  auto fail = [&tmp](Status s) {
    ::unlink(tmp.c_str());
    return s;
  };
  if (::fchmod(fd, 0600) != 0) return fail(ErrnoError(errno, "chmod " + tmp));
  if (Status s = WriteAll(fd, text, "writing " + tmp); !s.ok()) return fail(std::move(s));
  if (::fsync(fd) != 0) return fail(ErrnoError(errno, "fsync " + tmp));
  if (closer.Close() != 0) return fail(ErrnoError(errno, "closing " + tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(ErrnoError(errno, fmt::format("renaming {} to {}", tmp, path)));
  }
  // Make the rename itself durable. Some file systems cannot fsync a directory (EINVAL).
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECTORY);
  if (dir_fd < 0) return ErrnoError(errno, "opening " + dir);
  FdCloser dir_closer(dir_fd);
  if (::fsync(dir_fd) != 0 && errno != EINVAL) return ErrnoError(errno, "fsync " + dir);
  return OkStatus();
}

std::optional<uint16_t> ParsePortNumber(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  uint32_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  if (n < 1 || n > 65535) return std::nullopt;
  return static_cast<uint16_t>(n);
}

}  // namespace

std::string_view BackendName(Backend backend) {
  switch (backend) {
    case Backend::kQemu:
      return "qemu";
    case Backend::kHyperkit:
      return "hyperkit";
    case Backend::kNative:
      return "native";
  }
  return "unknown";
}

StatusOr<Backend> ParseBackend(std::string_view name) {
  for (Backend b : {Backend::kQemu, Backend::kHyperkit, Backend::kNative}) {
    if (name == BackendName(b)) return b;
  }
  return UnknownNameError(name, "backend", kBackendNames);
}

std::string_view AccelName(Accel accel) {
  switch (accel) {
    case Accel::kAuto:
      return "auto";
    case Accel::kKvm:
      return "kvm";
    case Accel::kHvf:
      return "hvf";
    case Accel::kTcg:
      return "tcg";
    case Accel::kNone:
      return "none";
  }
  return "unknown";
}

StatusOr<Accel> ParseAccel(std::string_view name) {
  for (Accel a : {Accel::kAuto, Accel::kKvm, Accel::kHvf, Accel::kTcg, Accel::kNone}) {
    if (name == AccelName(a)) return a;
  }
  return UnknownNameError(name, "accelerator", kAccelNames);
}

bool IsAccelSupported(Backend backend, Accel accel) {
  switch (backend) {
    case Backend::kQemu:
      return accel == Accel::kAuto || accel == Accel::kKvm || accel == Accel::kHvf ||
             accel == Accel::kTcg;
    case Backend::kHyperkit:
      return accel == Accel::kAuto || accel == Accel::kHvf;
    case Backend::kNative:
      return accel == Accel::kAuto || accel == Accel::kNone;
  }
  return false;
}

StatusOr<Protocol> ParseProtocol(std::string_view name) {
  for (Protocol p : {Protocol::kTcp, Protocol::kUdp}) {
    if (name == ProtocolName(p)) return p;
  }
  return UnknownNameError(name, "protocol", kProtocolNames);
}

InstanceConfig DefaultInstanceConfig(const ConfigDefaultsContext& context) {
  InstanceConfig c;
  c.backend = context.is_macos && !context.is_arm64 ? Backend::kHyperkit : Backend::kQemu;
  // vhost-user needs Linux (eventfds, a shared memfd); QEMU on macOS keeps the serial ports.
  c.share_transport = context.is_macos ? "serial" : "vsock";
  c.agent_transport = context.is_macos ? "tcp" : "vsock";
  if (PathProblem(context.home_dir, /*is_guest=*/true).empty()) {
    c.shares.push_back(Share{.host_path = context.home_dir,
                             .guest_path = context.home_dir,
                             .read_only = false,
                             .tag = TagBaseFromPath(context.home_dir)});
  }
  return c;
}

Status ValidateInstanceName(std::string_view name) {
  auto is_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  const bool valid = !name.empty() && name.size() <= kMaxInstanceNameLength &&
                     is_alnum(name.front()) && std::all_of(name.begin(), name.end(), IsTagChar);
  if (valid) return OkStatus();
  return InvalidArgumentError(fmt::format("{} is not a valid instance name, expected {}",
                                          RenderString(name), kNameExpected));
}

StatusOr<InstanceConfig> NormalizeInstanceConfig(InstanceConfig config) {
  FUN_RETURN_IF_ERROR(CheckFields(config));
  for (size_t i = 0; i < config.shares.size(); ++i) {
    Share& s = config.shares[i];
    if (!s.guest_path.empty()) continue;
    // A derived guest path must pass the guest rules too (sharing "/" needs an explicit
    // guest_path), or the config would not survive a save and a load.
    s.guest_path = s.host_path;
    FUN_RETURN_IF_ERROR_CTX(
        CheckPath(fmt::format("shares[{}].guest_path", i), s.guest_path, /*is_guest=*/true),
        fmt::format("shares[{}].host_path is used as the guest path", i));
  }
  FUN_RETURN_IF_ERROR(CheckCrossFields(config));
  std::set<std::string> taken;
  for (const Share& s : config.shares) {
    if (!s.tag.empty()) taken.insert(s.tag);
  }
  for (Share& s : config.shares) {
    if (s.tag.empty()) {
      s.tag = UniqueTag(s.host_path, taken);
      taken.insert(s.tag);
    }
  }
  return config;
}

StatusOr<InstanceConfig> ParseInstanceConfig(std::string_view json_text,
                                             const InstanceConfig& defaults,
                                             std::string_view source_name) {
  return ParseImpl(json_text, defaults, source_name, /*prefix_all=*/false);
}

nlohmann::json ToJson(const InstanceConfig& config) { return BuildJson<nlohmann::json>(config); }

std::string SerializeInstanceConfig(const InstanceConfig& config) {
  return BuildJson<OJson>(config).dump(2, ' ', false, OJson::error_handler_t::replace) + "\n";
}

StatusOr<InstanceConfig> LoadInstanceConfigFile(const std::string& path,
                                                const InstanceConfig& defaults) {
  FUN_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
  return ParseImpl(text, defaults, path, /*prefix_all=*/true);
}

Status SaveInstanceConfigFile(const std::string& path, const InstanceConfig& config) {
  StatusOr<InstanceConfig> normalized = NormalizeInstanceConfig(config);
  if (!normalized.ok()) return normalized.status().WithContext("not saving " + path);
  return WriteFileAtomically(path, SerializeInstanceConfig(*normalized))
      .WithContext("saving " + path);
}

StatusOr<std::vector<std::pair<uint16_t, uint16_t>>> ParsePortRanges(std::string_view spec) {
  std::vector<std::pair<uint16_t, uint16_t>> out;
  if (spec == "all") return std::vector<std::pair<uint16_t, uint16_t>>{{1, 65535}};
  if (spec == "off") return out;
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("{} {}, expected \"all\", \"off\" or port ranges such as \"3000,8000-8999\"",
                    RenderString(spec), why));
  };
  if (spec.empty()) return bad("is empty");
  if (spec.size() > 512) return bad("is too long");
  auto port = [](std::string_view s) -> std::optional<uint16_t> {
    if (s.empty() || s.size() > 5) return std::nullopt;
    unsigned v = 0;
    for (char ch : s) {
      if (ch < '0' || ch > '9') return std::nullopt;
      v = v * 10 + static_cast<unsigned>(ch - '0');
    }
    if (v < 1 || v > 65535) return std::nullopt;
    return static_cast<uint16_t>(v);
  };
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    const std::string_view item = spec.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const size_t dash = item.find('-');
    const auto lo = port(item.substr(0, dash));
    const auto hi = dash == std::string_view::npos ? lo : port(item.substr(dash + 1));
    if (!lo || !hi)
      return bad(
          fmt::format("has {} which is not a port 1-65535 or a range A-B", RenderString(item)));
    if (*lo > *hi) return bad(fmt::format("has the descending range {}", RenderString(item)));
    out.emplace_back(*lo, *hi);
    if (out.size() > 64) return bad("has more than 64 ranges");
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

StatusOr<PortForward> ParsePortSpec(std::string_view spec) {
  auto error = [spec](std::string_view problem) {
    return InvalidArgumentError(fmt::format("invalid port spec {}: {}; {}", RenderString(spec),
                                            problem, kPortSpecExpected));
  };
  if (spec.empty()) return error("it is empty");
  if (spec.size() > 128) return error("it is too long");
  PortForward port;
  std::string_view rest = spec;
  if (const size_t slash = rest.rfind('/'); slash != std::string_view::npos) {
    const std::string_view name = rest.substr(slash + 1);
    StatusOr<Protocol> protocol = ParseProtocol(name);
    if (!protocol.ok()) {
      return error(fmt::format("{} is not a protocol (tcp or udp)", RenderString(name)));
    }
    port.protocol = *protocol;
    rest = rest.substr(0, slash);
  }
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return error(R"(no "]" after the IPv6 address)");
    const std::string_view ip = rest.substr(1, close - 1);
    const std::optional<IpAddress> parsed = ParseIp(ip);
    if (!parsed || parsed->family != AF_INET6) {
      return error(fmt::format("{} in brackets is not an IPv6 address", RenderString(ip)));
    }
    port.host_ip = std::string(ip);
    rest = rest.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return error(R"(expected ":" and the host port after "]")");
    }
    rest.remove_prefix(1);
    if (std::count(rest.begin(), rest.end(), ':') != 1) {
      return error("expected HOST_PORT:GUEST_PORT after the address");
    }
  } else {
    const auto colons = std::count(rest.begin(), rest.end(), ':');
    if (colons == 0) return error("it needs both a host port and a guest port");
    if (colons > 2) return error("an IPv6 host address goes in brackets, such as [::1]:8080:80");
    if (colons == 2) {
      const size_t first = rest.find(':');
      const std::string_view ip = rest.substr(0, first);
      if (ip.empty()) return error("the host address before the first \":\" is empty");
      if (!ParseIp(ip)) return error(fmt::format("{} is not an IP address", RenderString(ip)));
      port.host_ip = std::string(ip);
      rest = rest.substr(first + 1);
    }
  }
  const size_t colon = rest.find(':');
  const std::string_view host_port = rest.substr(0, colon);
  const std::string_view guest_port = rest.substr(colon + 1);
  const std::optional<uint16_t> host = ParsePortNumber(host_port);
  if (!host) {
    return error(
        fmt::format("host port {} is not an integer from 1 to 65535", RenderString(host_port)));
  }
  const std::optional<uint16_t> guest = ParsePortNumber(guest_port);
  if (!guest) {
    return error(
        fmt::format("guest port {} is not an integer from 1 to 65535", RenderString(guest_port)));
  }
  port.host_port = *host;
  port.guest_port = *guest;
  return port;
}

std::string FormatPortSpec(const PortForward& port) {
  const bool v6 = port.host_ip.find(':') != std::string::npos;
  return fmt::format("{}{}{}:{}:{}/{}", v6 ? "[" : "", port.host_ip, v6 ? "]" : "", port.host_port,
                     port.guest_port, ProtocolName(port.protocol));
}

}  // namespace fun
