#include "lib/vhost/message.h"

#include <fmt/format.h>

#include <cassert>
#include <iterator>
#include <string_view>

namespace fun::vhost {
namespace {

// Little-endian loads and stores, byte by byte: the peer's layout, whatever the host's.
uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

uint64_t Load64(const uint8_t* p) {
  return static_cast<uint64_t>(Load32(p)) | static_cast<uint64_t>(Load32(p + 4)) << 32;
}

void Append32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void Append64(std::string& out, uint64_t v) {
  Append32(out, static_cast<uint32_t>(v));
  Append32(out, static_cast<uint32_t>(v >> 32));
}

Status SizeError(std::string_view what, size_t got, size_t expected) {
  return InvalidArgumentError(
      fmt::format("vhost-user {}: payload of {} bytes, expected {}", what, got, expected));
}

std::string ReplyHeader(uint32_t request, size_t payload_size) {
  return EncodeHeader({.request = request,
                       .flags = kVersion | kFlagReply,
                       .size = static_cast<uint32_t>(payload_size)});
}

// [a, a + a_len) and [b, b + b_len) share a byte (both ranges known not to wrap).
bool Overlap(uint64_t a, uint64_t a_len, uint64_t b, uint64_t b_len) {
  return a < b + b_len && b < a + a_len;
}

constexpr size_t kVringAddrSize = 40;
constexpr size_t kMemTableHeaderSize = 8;
constexpr size_t kMemRegionSize = 32;
constexpr size_t kConfigHeaderSize = 12;
constexpr uint32_t kVringAddrFlagLog = 1u << 0;  // VHOST_VRING_F_LOG
constexpr uint64_t kVringFdIndexMask = 0xff;
constexpr uint64_t kVringFdNoFd = 1ull << 8;

// Indexed by request number; 26 to 35 are not in Request (the back-end does not handle them)
// but are named so that a log says what QEMU sent.
constexpr std::string_view kRequestNames[] = {
    "",  // 0
    "GET_FEATURES",
    "SET_FEATURES",
    "SET_OWNER",
    "RESET_OWNER",
    "SET_MEM_TABLE",
    "SET_LOG_BASE",
    "SET_LOG_FD",
    "SET_VRING_NUM",
    "SET_VRING_ADDR",
    "SET_VRING_BASE",
    "GET_VRING_BASE",
    "SET_VRING_KICK",
    "SET_VRING_CALL",
    "SET_VRING_ERR",
    "GET_PROTOCOL_FEATURES",
    "SET_PROTOCOL_FEATURES",
    "GET_QUEUE_NUM",
    "SET_VRING_ENABLE",
    "SEND_RARP",
    "NET_SET_MTU",
    "SET_BACKEND_REQ_FD",
    "IOTLB_MSG",
    "SET_VRING_ENDIAN",
    "GET_CONFIG",
    "SET_CONFIG",
    "CREATE_CRYPTO_SESSION",
    "CLOSE_CRYPTO_SESSION",
    "POSTCOPY_ADVISE",
    "POSTCOPY_LISTEN",
    "POSTCOPY_END",
    "GET_INFLIGHT_FD",
    "SET_INFLIGHT_FD",
    "GPU_SET_SOCKET",
    "RESET_DEVICE",
    "VRING_KICK",
    "GET_MAX_MEM_SLOTS",
    "ADD_MEM_REG",
    "REM_MEM_REG",
    "SET_STATUS",
    "GET_STATUS",
};

}  // namespace

std::string RequestName(uint32_t request) {
  if (request < std::size(kRequestNames) && !kRequestNames[request].empty()) {
    return std::string(kRequestNames[request]);
  }
  return fmt::format("request {}", request);
}

StatusOr<Header> DecodeHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() != kHeaderSize) {
    return InvalidArgumentError(
        fmt::format("vhost-user header: {} bytes, expected {}", bytes.size(), kHeaderSize));
  }
  Header h{.request = Load32(bytes.data()),
           .flags = Load32(bytes.data() + 4),
           .size = Load32(bytes.data() + 8)};
  if ((h.flags & kFlagVersionMask) != kVersion) {
    return InvalidArgumentError(fmt::format("vhost-user {}: protocol version {}, expected {}",
                                            RequestName(h.request), h.flags & kFlagVersionMask,
                                            kVersion));
  }
  if (h.size > kMaxPayload) {
    return InvalidArgumentError(
        fmt::format("vhost-user {}: payload of {} bytes, at most {} allowed",
                    RequestName(h.request), h.size, kMaxPayload));
  }
  return h;
}

std::string EncodeHeader(const Header& h) {
  std::string out;
  out.reserve(kHeaderSize);
  Append32(out, h.request);
  Append32(out, h.flags);
  Append32(out, h.size);
  return out;
}

StatusOr<uint64_t> DecodeU64(std::span<const uint8_t> payload) {
  if (payload.size() != 8) return SizeError("u64 message", payload.size(), 8);
  return Load64(payload.data());
}

StatusOr<VringState> DecodeVringState(std::span<const uint8_t> payload) {
  if (payload.size() != 8) return SizeError("vring state message", payload.size(), 8);
  return VringState{.index = Load32(payload.data()), .num = Load32(payload.data() + 4)};
}

StatusOr<VringAddr> DecodeVringAddr(std::span<const uint8_t> payload) {
  if (payload.size() != kVringAddrSize) {
    return SizeError("SET_VRING_ADDR", payload.size(), kVringAddrSize);
  }
  const uint8_t* p = payload.data();
  VringAddr a{.index = Load32(p),
              .flags = Load32(p + 4),
              .desc = Load64(p + 8),
              .used = Load64(p + 16),
              .avail = Load64(p + 24),
              .log = Load64(p + 32)};
  if (a.flags & kVringAddrFlagLog) {
    return InvalidArgumentError(fmt::format(
        "vhost-user SET_VRING_ADDR: ring {} asks for used ring logging (migration), which "
        "this back-end does not support",
        a.index));
  }
  return a;
}

StatusOr<VringFd> DecodeVringFd(std::span<const uint8_t> payload) {
  if (payload.size() != 8) {
    return SizeError("SET_VRING_KICK/CALL/ERR", payload.size(), 8);
  }
  uint64_t v = Load64(payload.data());
  if (v & ~(kVringFdIndexMask | kVringFdNoFd)) {
    return InvalidArgumentError(
        fmt::format("vhost-user SET_VRING_KICK/CALL/ERR: value {:#x} has bits set above bit 8", v));
  }
  return VringFd{.index = static_cast<uint32_t>(v & kVringFdIndexMask),
                 .no_fd = (v & kVringFdNoFd) != 0};
}

StatusOr<std::vector<MemoryRegion>> DecodeMemTable(std::span<const uint8_t> payload) {
  constexpr size_t kFullSize = kMemTableHeaderSize + kMemRegionSize * kMaxMemoryRegions;
  if (payload.size() < kMemTableHeaderSize) {
    return InvalidArgumentError(
        fmt::format("vhost-user SET_MEM_TABLE: payload of {} bytes, expected at least {}",
                    payload.size(), kMemTableHeaderSize));
  }
  uint32_t n = Load32(payload.data());
  if (n < 1 || n > kMaxMemoryRegions) {
    return InvalidArgumentError(fmt::format(
        "vhost-user SET_MEM_TABLE: {} regions, expected 1 to {}", n, kMaxMemoryRegions));
  }
  // QEMU sizes the payload for the regions it sends; older senders use the whole 8-region
  // array. Anything in between is tolerated, the bytes past the regions ignored.
  size_t needed = kMemTableHeaderSize + kMemRegionSize * n;
  if (payload.size() < needed || payload.size() > kFullSize) {
    return InvalidArgumentError(
        fmt::format("vhost-user SET_MEM_TABLE: payload of {} bytes, expected {} to {} for {} "
                    "regions",
                    payload.size(), needed, kFullSize, n));
  }
  std::vector<MemoryRegion> regions;
  regions.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* p = payload.data() + kMemTableHeaderSize + kMemRegionSize * i;
    MemoryRegion r{.guest_phys_addr = Load64(p),
                   .size = Load64(p + 8),
                   .user_addr = Load64(p + 16),
                   .mmap_offset = Load64(p + 24)};
    auto bad = [&](std::string_view why) {
      return InvalidArgumentError(fmt::format("vhost-user SET_MEM_TABLE: region {} {}", i, why));
    };
    if (r.size == 0) return bad("has size 0");
    uint64_t end;
    if (__builtin_add_overflow(r.guest_phys_addr, r.size, &end)) {
      return bad(fmt::format("at guest address {:#x} with size {:#x} wraps past 2^64",
                             r.guest_phys_addr, r.size));
    }
    if (__builtin_add_overflow(r.user_addr, r.size, &end)) {
      return bad(fmt::format("at user address {:#x} with size {:#x} wraps past 2^64", r.user_addr,
                             r.size));
    }
    if (__builtin_add_overflow(r.mmap_offset, r.size, &end)) {
      return bad(fmt::format("at mmap offset {:#x} with size {:#x} wraps past 2^64", r.mmap_offset,
                             r.size));
    }
    for (uint32_t j = 0; j < i; ++j) {
      const MemoryRegion& o = regions[j];
      if (Overlap(r.guest_phys_addr, r.size, o.guest_phys_addr, o.size)) {
        return bad(fmt::format("overlaps region {} in guest addresses", j));
      }
      if (Overlap(r.user_addr, r.size, o.user_addr, o.size)) {
        return bad(fmt::format("overlaps region {} in user addresses", j));
      }
    }
    regions.push_back(r);
  }
  return regions;
}

StatusOr<ConfigRequest> DecodeConfig(std::span<const uint8_t> payload) {
  if (payload.size() < kConfigHeaderSize) {
    return InvalidArgumentError(
        fmt::format("vhost-user GET_CONFIG/SET_CONFIG: payload of {} bytes, expected at least {}",
                    payload.size(), kConfigHeaderSize));
  }
  ConfigRequest c{.offset = Load32(payload.data()),
                  .size = Load32(payload.data() + 4),
                  .flags = Load32(payload.data() + 8)};
  if (c.size > kMaxConfigSize) {
    return InvalidArgumentError(
        fmt::format("vhost-user GET_CONFIG/SET_CONFIG: config size {}, at most {} allowed", c.size,
                    kMaxConfigSize));
  }
  if (payload.size() != kConfigHeaderSize + c.size) {
    return InvalidArgumentError(fmt::format(
        "vhost-user GET_CONFIG/SET_CONFIG: payload of {} bytes, expected {} for {} config bytes",
        payload.size(), kConfigHeaderSize + c.size, c.size));
  }
  c.data.assign(payload.begin() + kConfigHeaderSize, payload.end());
  return c;
}

std::string EncodeReplyU64(uint32_t request, uint64_t value) {
  std::string out = ReplyHeader(request, 8);
  Append64(out, value);
  return out;
}

std::string EncodeReplyVringState(uint32_t request, const VringState& s) {
  std::string out = ReplyHeader(request, 8);
  Append32(out, s.index);
  Append32(out, s.num);
  return out;
}

std::string EncodeReplyConfig(uint32_t request, const ConfigRequest& req,
                              std::span<const uint8_t> config) {
  // The size field says what the reply holds, so a caller that breaks the precondition sends
  // a reply QEMU refuses (it checks the size it asked for) rather than a torn one.
  assert(config.size() == req.size);
  std::string out = ReplyHeader(request, kConfigHeaderSize + config.size());
  Append32(out, req.offset);
  Append32(out, static_cast<uint32_t>(config.size()));
  Append32(out, req.flags);
  out.append(reinterpret_cast<const char*>(config.data()), config.size());
  return out;
}

}  // namespace fun::vhost
