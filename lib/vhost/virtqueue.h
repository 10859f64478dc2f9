// virtqueue.h: a virtio split virtqueue as the device side sees it, in guest memory that
// fun-hostd has mapped (virtio 1.x, section 2.7).
//
// Everything in guest memory is written by the guest and untrusted: descriptor addresses and
// lengths, chain links, the available index. Pop checks each against the memory map and the
// ring size and fails with a message (the back-end then stops the queue) instead of reading
// or writing outside guest memory, looping, or handing out a descriptor twice per pop.
// The fuzzer (fuzz/vhost_virtqueue_fuzzer.cc) runs Pop/Push over rings it writes itself.
//
//   GuestMemory mem;
//   mem.AddRegion(region, host_pointer_to_region_start);      // from SET_MEM_TABLE
//   SplitQueue q;
//   FUN_RETURN_IF_ERROR(q.Configure(mem, num, addr, base));  // SET_VRING_NUM/ADDR/BASE
//   while (true) {
//     FUN_ASSIGN_OR_RETURN(std::optional<Chain> c, q.Pop(mem));
//     if (!c) break;                                          // nothing more available
//     ... read c->readable, write into c->writable ...
//     q.Push(c->head, bytes_written);
//   }
//   if (q.ShouldNotify()) eventfd_write(call_fd, 1);
//
// No VIRTIO_RING_F_EVENT_IDX and no indirect descriptors (the back-end does not offer them).
// Thread-safety: one thread per queue; the guest runs concurrently, hence the atomic
// accesses to the rings' indexes (acquire the available index, release the used index).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "lib/base/status.h"
#include "lib/vhost/message.h"

namespace fun::vhost {

class GuestMemory {
 public:
  // `host` points at the first byte of the region (the mapping plus its mmap_offset) and
  // stays valid while this object is used. Regions come from DecodeMemTable (no overlaps).
  void AddRegion(const MemoryRegion& region, uint8_t* host);
  void Clear() { regions_.clear(); }
  bool empty() const { return regions_.empty(); }

  // The host address of guest-physical [gpa, gpa + len), or nullptr unless the whole range
  // lies in one region (len 0: the address must still be inside a region).
  uint8_t* Translate(uint64_t gpa, uint64_t len) const;
  // The same for QEMU's user addresses (SET_VRING_ADDR's).
  uint8_t* TranslateUser(uint64_t user_addr, uint64_t len) const;

 private:
  struct Region {
    MemoryRegion r;
    uint8_t* host;
  };
  std::vector<Region> regions_;
};

// One contiguous piece of a descriptor chain, in host memory.
struct Segment {
  uint8_t* data = nullptr;
  uint32_t len = 0;
};

struct Chain {
  uint16_t head = 0;              // for Push
  std::vector<Segment> readable;  // device-readable descriptors, in chain order
  std::vector<Segment> writable;  // device-writable descriptors, in chain order
  uint64_t readable_len = 0;
  uint64_t writable_len = 0;
};

class SplitQueue {
 public:
  // Largest ring: virtio's limit for split rings.
  static constexpr uint32_t kMaxSize = 32768;

  // `num`: a power of two, 1..kMaxSize. `addr`'s desc, avail and used are user addresses
  // (translated with mem.TranslateUser, each with its ring's full size and alignment: 16, 2
  // and 4 bytes). `last_avail_idx`: SET_VRING_BASE's value.
  Status Configure(const GuestMemory& mem, uint32_t num, const VringAddr& addr,
                   uint16_t last_avail_idx);
  bool configured() const { return desc_ != nullptr; }
  void Reset();  // unconfigured again (GET_VRING_BASE stops a ring)

  // The next available chain, nullopt when the guest has made none available since the last
  // Pop, or an error when the guest broke the ring: an available index more than `num`
  // ahead, a head or next index >= num, a chain longer than num (a loop), a descriptor outside
  // guest memory, a readable descriptor after a writable one, VIRTQ_DESC_F_INDIRECT.
  StatusOr<std::optional<Chain>> Pop(const GuestMemory& mem);
  // Gives the chain the last Pop returned back, untouched (it is popped again next time): for a
  // device that took a buffer and then found nothing to put in it. Only right after a Pop.
  void Unpop() { --last_avail_; }
  // Puts `head` in the used ring with `written` bytes written into its writable part.
  void Push(uint16_t head, uint32_t written);
  // Whether the guest wants an interrupt now (VRING_AVAIL_F_NO_INTERRUPT unset) and something
  // was pushed since the last call.
  bool ShouldNotify();
  // Whether the guest made chains available that Pop has not taken yet.
  bool HasAvailable() const;

  uint16_t last_avail_idx() const { return last_avail_; }
  uint32_t size() const { return num_; }

 private:
  uint32_t num_ = 0;
  uint8_t* desc_ = nullptr;   // struct virtq_desc[num]: le64 addr, le32 len, le16 flags, le16 next
  uint8_t* avail_ = nullptr;  // le16 flags, le16 idx, le16 ring[num]
  uint8_t* used_ = nullptr;   // le16 flags, le16 idx, struct { le32 id, le32 len } ring[num]
  uint16_t last_avail_ = 0;
  uint16_t used_idx_ = 0;
  bool pushed_ = false;
};

}  // namespace fun::vhost
