#include "lib/vhost/virtqueue.h"

#include <fmt/format.h>

#include <atomic>
#include <bit>
#include <cstring>

namespace fun::vhost {
namespace {

constexpr uint16_t kDescFlagNext = 1;          // VIRTQ_DESC_F_NEXT
constexpr uint16_t kDescFlagWrite = 2;         // VIRTQ_DESC_F_WRITE
constexpr uint16_t kDescFlagIndirect = 4;      // VIRTQ_DESC_F_INDIRECT
constexpr uint16_t kAvailFlagNoInterrupt = 1;  // VRING_AVAIL_F_NO_INTERRUPT

constexpr size_t kDescSize = 16;
constexpr size_t kRingHeaderSize = 4;  // le16 flags, le16 idx (avail and used alike)
constexpr size_t kUsedElemSize = 8;

uint16_t FromLe16(uint16_t v) {
  if constexpr (std::endian::native == std::endian::big) return __builtin_bswap16(v);
  return v;
}

// Plain little-endian loads and stores (memcpy: guest memory has no alignment promises and
// the guest may write it concurrently; each field is read once into a local).
uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return FromLe16(v);
}

uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(Load16(p)) | static_cast<uint32_t>(Load16(p + 2)) << 16;
}

uint64_t Load64(const uint8_t* p) {
  return static_cast<uint64_t>(Load32(p)) | static_cast<uint64_t>(Load32(p + 4)) << 32;
}

void Store32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// The rings' 16-bit indexes and flags, shared with a guest running concurrently. The pointers
// are 2-byte aligned (Configure checks).
std::atomic_ref<uint16_t> Shared16(uint8_t* p) {
  return std::atomic_ref<uint16_t>(*static_cast<uint16_t*>(static_cast<void*>(p)));
}

uint16_t AtomicLoad16(uint8_t* p, std::memory_order order) {
  return FromLe16(Shared16(p).load(order));
}

void AtomicStore16(uint8_t* p, uint16_t v, std::memory_order order) {
  Shared16(p).store(FromLe16(v), order);
}

uint8_t* Find(uint64_t addr, uint64_t len, uint64_t region_start, uint64_t region_size,
              uint8_t* host) {
  // Subtractions only: nothing here can wrap, whatever addr and len are.
  if (addr < region_start) return nullptr;
  uint64_t offset = addr - region_start;
  if (offset >= region_size) return nullptr;
  if (len > region_size - offset) return nullptr;
  return host + offset;
}

}  // namespace

void GuestMemory::AddRegion(const MemoryRegion& region, uint8_t* host) {
  regions_.push_back({.r = region, .host = host});
}

uint8_t* GuestMemory::Translate(uint64_t gpa, uint64_t len) const {
  for (const Region& reg : regions_) {
    if (uint8_t* p = Find(gpa, len, reg.r.guest_phys_addr, reg.r.size, reg.host)) return p;
  }
  return nullptr;
}

uint8_t* GuestMemory::TranslateUser(uint64_t user_addr, uint64_t len) const {
  for (const Region& reg : regions_) {
    if (uint8_t* p = Find(user_addr, len, reg.r.user_addr, reg.r.size, reg.host)) return p;
  }
  return nullptr;
}

Status SplitQueue::Configure(const GuestMemory& mem, uint32_t num, const VringAddr& addr,
                             uint16_t last_avail_idx) {
  Reset();
  if (num == 0 || num > kMaxSize || !std::has_single_bit(num)) {
    return InvalidArgumentError(fmt::format(
        "virtqueue {}: size {} is not a power of two from 1 to {}", addr.index, num, kMaxSize));
  }
  // `host_align`: what the accesses in place need on the host side (2 for the atomic 16-bit
  // indexes; descriptors are copied out with memcpy). Mappings are page-aligned, so this only
  // fails with a region starting at an odd host address.
  auto translate = [&](std::string_view what, uint64_t user_addr, uint64_t len, uint64_t align,
                       uint64_t host_align) -> StatusOr<uint8_t*> {
    if (user_addr % align != 0) {
      return InvalidArgumentError(
          fmt::format("virtqueue {}: {} at user address {:#x} is not {}-byte aligned", addr.index,
                      what, user_addr, align));
    }
    uint8_t* p = mem.TranslateUser(user_addr, len);
    if (p == nullptr) {
      return InvalidArgumentError(fmt::format(
          "virtqueue {}: {} at user address {:#x} ({} bytes) is not inside one memory region",
          addr.index, what, user_addr, len));
    }
    if (reinterpret_cast<uintptr_t>(p) % host_align != 0) {
      return InvalidArgumentError(
          fmt::format("virtqueue {}: {} at user address {:#x} maps to a host address that is "
                      "not {}-byte aligned",
                      addr.index, what, user_addr, host_align));
    }
    return p;
  };
  FUN_ASSIGN_OR_RETURN(uint8_t * desc,
                       translate("descriptor table", addr.desc, uint64_t{kDescSize} * num, 16, 1));
  FUN_ASSIGN_OR_RETURN(uint8_t * avail, translate("available ring", addr.avail,
                                                  kRingHeaderSize + 2 + 2 * num, 2, 2));
  FUN_ASSIGN_OR_RETURN(uint8_t * used, translate("used ring", addr.used,
                                                 kRingHeaderSize + 2 + kUsedElemSize * num, 4, 2));
  num_ = num;
  desc_ = desc;
  avail_ = avail;
  used_ = used;
  last_avail_ = last_avail_idx;
  // The used index continues from what the ring holds: 0 on a fresh ring, or where this
  // back-end (or an earlier one) left it before GET_VRING_BASE.
  used_idx_ = AtomicLoad16(used_ + 2, std::memory_order_relaxed);
  pushed_ = false;
  return OkStatus();
}

// last_avail_ survives so that GET_VRING_BASE can reply with it after stopping the ring.
void SplitQueue::Reset() {
  num_ = 0;
  desc_ = nullptr;
  avail_ = nullptr;
  used_ = nullptr;
  used_idx_ = 0;
  pushed_ = false;
}

StatusOr<std::optional<Chain>> SplitQueue::Pop(const GuestMemory& mem) {
  if (!configured()) return FailedPreconditionError("virtqueue: Pop on a ring not configured");
  // Acquire: the ring entries and descriptors the guest wrote before moving the index.
  uint16_t avail_idx = AtomicLoad16(avail_ + 2, std::memory_order_acquire);
  uint16_t pending = static_cast<uint16_t>(avail_idx - last_avail_);
  if (pending == 0) return std::optional<Chain>();
  if (pending > num_) {
    return InvalidArgumentError(fmt::format(
        "virtqueue: the guest moved the available index to {} with {} taken, more than the "
        "ring's {} entries ahead",
        avail_idx, last_avail_, num_));
  }
  uint32_t slot = last_avail_ & (num_ - 1);
  uint16_t head = Load16(avail_ + kRingHeaderSize + 2 * slot);
  if (head >= num_) {
    return InvalidArgumentError(
        fmt::format("virtqueue: available ring entry {} names descriptor {}, past the ring's {}",
                    slot, head, num_));
  }
  Chain chain;
  chain.head = head;
  uint32_t i = head;
  bool seen_writable = false;
  for (uint32_t count = 1;; ++count) {
    if (count > num_) {
      return InvalidArgumentError(fmt::format(
          "virtqueue: the chain from descriptor {} is longer than the ring's {} entries (a loop)",
          head, num_));
    }
    const uint8_t* d = desc_ + kDescSize * i;
    uint64_t addr = Load64(d);
    uint32_t len = Load32(d + 8);
    uint16_t flags = Load16(d + 12);
    uint16_t next = Load16(d + 14);
    if (flags & kDescFlagIndirect) {
      return InvalidArgumentError(fmt::format(
          "virtqueue: descriptor {} is indirect, a feature this device does not offer", i));
    }
    bool writable = (flags & kDescFlagWrite) != 0;
    if (!writable && seen_writable) {
      return InvalidArgumentError(
          fmt::format("virtqueue: descriptor {} is device-readable after a writable one", i));
    }
    seen_writable = seen_writable || writable;
    if (len > 0) {
      uint8_t* p = mem.Translate(addr, len);
      if (p == nullptr) {
        return InvalidArgumentError(fmt::format(
            "virtqueue: descriptor {} at guest address {:#x} ({} bytes) is not inside one "
            "memory region",
            i, addr, len));
      }
      // At most kMaxSize descriptors of < 2^32 bytes each: the uint64 sums cannot wrap.
      if (writable) {
        chain.writable.push_back({.data = p, .len = len});
        chain.writable_len += len;
      } else {
        chain.readable.push_back({.data = p, .len = len});
        chain.readable_len += len;
      }
    }
    if (!(flags & kDescFlagNext)) break;
    if (next >= num_) {
      return InvalidArgumentError(fmt::format(
          "virtqueue: descriptor {} links to descriptor {}, past the ring's {}", i, next, num_));
    }
    i = next;
  }
  ++last_avail_;
  return std::optional<Chain>(std::move(chain));
}

void SplitQueue::Push(uint16_t head, uint32_t written) {
  if (!configured()) return;
  uint8_t* elem = used_ + kRingHeaderSize + kUsedElemSize * (used_idx_ & (num_ - 1));
  Store32(elem, head);
  Store32(elem + 4, written);
  ++used_idx_;
  // Release: the element is visible to the guest before the index that hands it over.
  AtomicStore16(used_ + 2, used_idx_, std::memory_order_release);
  pushed_ = true;
}

bool SplitQueue::ShouldNotify() {
  bool pushed = pushed_;
  pushed_ = false;
  if (!pushed || !configured()) return false;
  // The used index store must be ordered before the flags load, or a guest that clears
  // NO_INTERRUPT and then checks the used index could miss both the entry and the interrupt.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint16_t flags = AtomicLoad16(avail_, std::memory_order_relaxed);
  return (flags & kAvailFlagNoInterrupt) == 0;
}

bool SplitQueue::HasAvailable() const {
  if (!configured()) return false;
  return AtomicLoad16(avail_ + 2, std::memory_order_acquire) != last_avail_;
}

}  // namespace fun::vhost
