// message.h: the vhost-user protocol's messages, as bytes (QEMU's docs/interop/vhost-user.rst).
//
// QEMU (the front-end) drives a device whose data path lives in another process (the
// back-end: fun-hostd) over a unix socket: a 12-byte header (request, flags, payload size,
// little-endian) and a payload; file descriptors (guest memory, eventfds) travel beside the
// bytes as SCM_RIGHTS. This file is the pure codec: bytes in, structs out, and replies as
// bytes. It never touches a socket or an fd, so the fuzzer (fuzz/vhost_message_fuzzer.cc)
// covers everything QEMU could send.
//
//   FUN_ASSIGN_OR_RETURN(Header h, DecodeHeader(first12));      // then read h.size bytes
//   FUN_ASSIGN_OR_RETURN(VringState s, DecodeVringState(payload));
//   std::string reply = EncodeReplyU64(h.request, features);
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lib/base/status.h"

namespace fun::vhost {

enum class Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
};
// "GET_FEATURES", ...; "request <n>" for a number outside the table.
std::string RequestName(uint32_t request);

inline constexpr size_t kHeaderSize = 12;
// The largest payload accepted. QEMU's largest is a config read (12 + 256 bytes) or a memory
// table (8 + 8 * 32); anything past this is a broken or hostile peer.
inline constexpr uint32_t kMaxPayload = 4096;
inline constexpr uint32_t kMaxMemoryRegions = 8;  // VHOST_MEMORY_BASELINE_NREGIONS
inline constexpr uint32_t kMaxConfigSize = 256;

inline constexpr uint32_t kFlagVersionMask = 0x3;
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kFlagReply = 1u << 2;
inline constexpr uint32_t kFlagNeedReply = 1u << 3;

// Feature bits (of GET_FEATURES / SET_FEATURES).
inline constexpr uint64_t kFeatureProtocolFeatures = 1ull << 30;  // VHOST_USER_F_PROTOCOL_FEATURES
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;          // VIRTIO_F_VERSION_1
// Protocol feature bits (of GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES).
inline constexpr uint64_t kProtocolReplyAck = 1ull << 3;
inline constexpr uint64_t kProtocolConfig = 1ull << 9;

struct Header {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;  // payload bytes that follow
};
// Checks the version bits and size <= kMaxPayload. `bytes` must hold kHeaderSize bytes.
StatusOr<Header> DecodeHeader(std::span<const uint8_t> bytes);
std::string EncodeHeader(const Header& h);

// SET_FEATURES, SET_PROTOCOL_FEATURES, SET_LOG_BASE and others: one u64.
StatusOr<uint64_t> DecodeU64(std::span<const uint8_t> payload);

// SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE.
struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
};
StatusOr<VringState> DecodeVringState(std::span<const uint8_t> payload);

// SET_VRING_ADDR: the ring's parts as addresses in QEMU's own address space (user
// addresses, translated through the memory table's userspace_addr).
struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;  // bit 0: log the used ring (migration; refused here)
  uint64_t desc = 0;
  uint64_t used = 0;
  uint64_t avail = 0;
  uint64_t log = 0;
};
StatusOr<VringAddr> DecodeVringAddr(std::span<const uint8_t> payload);

// SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR: a u64 whose bits 0-7 name the ring; bit 8
// set means no fd comes with the message (polling mode, refused by the back-end).
struct VringFd {
  uint32_t index = 0;
  bool no_fd = false;
};
StatusOr<VringFd> DecodeVringFd(std::span<const uint8_t> payload);

// SET_MEM_TABLE: the guest memory regions; one fd per region comes with the message.
struct MemoryRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t size = 0;
  uint64_t user_addr = 0;    // where QEMU mapped it
  uint64_t mmap_offset = 0;  // where the region starts in its fd
};
// Checks 1 <= nregions <= kMaxMemoryRegions, the payload size, sizes > 0, no address range
// wrapping past 2^64, and that no two regions overlap in guest-physical or user addresses.
StatusOr<std::vector<MemoryRegion>> DecodeMemTable(std::span<const uint8_t> payload);

// GET_CONFIG (payload: offset, size, flags, then `size` bytes QEMU ignores), SET_CONFIG.
struct ConfigRequest {
  uint32_t offset = 0;
  uint32_t size = 0;  // <= kMaxConfigSize
  uint32_t flags = 0;
  std::vector<uint8_t> data;  // SET_CONFIG's bytes (size of them)
};
StatusOr<ConfigRequest> DecodeConfig(std::span<const uint8_t> payload);

// Replies: a header with kVersion | kFlagReply and the payload.
std::string EncodeReplyU64(uint32_t request, uint64_t value);
std::string EncodeReplyVringState(uint32_t request, const VringState& s);
// GET_CONFIG's reply: offset, size, flags and `config` (size bytes; config.size() == size).
std::string EncodeReplyConfig(uint32_t request, const ConfigRequest& req,
                              std::span<const uint8_t> config);

}  // namespace fun::vhost
