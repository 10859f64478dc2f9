// A split virtqueue (lib/vhost/virtqueue.h) over guest memory the fuzzer writes: whatever the
// guest puts in its rings and descriptors, Pop never hands out a byte outside guest memory
// (each segment lies inside one region), never loops, and Push/ShouldNotify stay in the ring.
//
// Input layout:
//   byte 0      ring size: 1 << (byte % 9), so 1..256
//   bytes 2-3   SET_VRING_BASE's last_avail_idx (le16)
//   bytes 4-19  a probe: Translate(le64 gpa, le64 len)
//   bytes 20-   guest memory from its first byte (the rest stays zero), 64 KiB in all.
// Guest memory is two regions of 32 KiB: A (host bytes 0..32K) at guest-physical 0x100000 and
// B (host bytes 32K..64K) at 0xf8000, right below A, so a range running from B's end into A is
// guest memory on both sides but must still be refused (taken through B it would run off the
// end of the buffer). The rings sit at fixed places in A: descriptors at host offset 0, the
// available ring at 0x1000, the used ring at 0x1400.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "lib/vhost/virtqueue.h"

namespace {

using namespace fun::vhost;

constexpr size_t kMemSize = 64 * 1024;
constexpr size_t kRegionSize = kMemSize / 2;
constexpr uint64_t kGpaA = 0x100000, kGpaB = kGpaA - kRegionSize;
constexpr uint64_t kUserA = 0x7f0000000000, kUserB = 0x7e0000000000;
constexpr size_t kParams = 20;

alignas(4096) uint8_t g_mem[kMemSize];

uint64_t Le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// [p, p + len) lies inside one region's host bytes.
bool InOneRegion(const uint8_t* p, uint64_t len) {
  for (size_t start : {size_t{0}, kRegionSize}) {
    const uint8_t* lo = g_mem + start;
    const uint8_t* hi = lo + kRegionSize;
    if (p >= lo && p < hi && len <= static_cast<uint64_t>(hi - p)) return true;
  }
  return false;
}

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t params[kParams] = {};
  std::memcpy(params, data, std::min(size, kParams));
  std::memset(g_mem, 0, sizeof g_mem);
  if (size > kParams) std::memcpy(g_mem, data + kParams, std::min(size - kParams, kMemSize));

  GuestMemory mem;
  mem.AddRegion({.guest_phys_addr = kGpaA, .size = kRegionSize, .user_addr = kUserA}, g_mem);
  mem.AddRegion({.guest_phys_addr = kGpaB,
                 .size = kRegionSize,
                 .user_addr = kUserB,
                 .mmap_offset = kRegionSize},
                g_mem + kRegionSize);

  uint64_t probe_gpa = Le64(params + 4), probe_len = Le64(params + 12);
  if (uint8_t* p = mem.Translate(probe_gpa, probe_len)) Check(InOneRegion(p, probe_len));
  if (uint8_t* p = mem.TranslateUser(probe_gpa, probe_len)) Check(InOneRegion(p, probe_len));

  uint32_t num = 1u << (params[0] % 9);
  uint16_t base = static_cast<uint16_t>(params[2] | params[3] << 8);
  SplitQueue q;
  fun::Status s = q.Configure(
      mem, num, {.desc = kUserA, .used = kUserA + 0x1400, .avail = kUserA + 0x1000}, base);
  Check(s.ok());  // the ring's own placement is fixed and valid

  // The guest does not move its index while we run, so at most num chains come out; writes
  // into writable segments may hit the ring itself, hence the generous bound.
  for (uint32_t i = 0; i < 4 * num + 8; ++i) {
    (void)q.HasAvailable();
    auto c = q.Pop(mem);
    if (!c.ok() || !c->has_value()) break;
    const Chain& chain = **c;
    Check(chain.head < num);
    Check(chain.readable.size() + chain.writable.size() <= num);
    uint64_t readable = 0, writable = 0;
    uint8_t sum = 0;
    for (const Segment& seg : chain.readable) {
      Check(seg.len > 0 && InOneRegion(seg.data, seg.len));
      readable += seg.len;
      for (uint32_t k = 0; k < seg.len; k += 997) sum = static_cast<uint8_t>(sum + seg.data[k]);
      sum = static_cast<uint8_t>(sum + seg.data[seg.len - 1]);
    }
    for (const Segment& seg : chain.writable) {
      Check(seg.len > 0 && InOneRegion(seg.data, seg.len));
      writable += seg.len;
      seg.data[0] = sum;
      seg.data[seg.len - 1] = sum;
    }
    Check(readable == chain.readable_len && writable == chain.writable_len);
    q.Push(chain.head, static_cast<uint32_t>(std::min<uint64_t>(writable, UINT32_MAX)));
    if (i % 3 == 0) (void)q.ShouldNotify();
  }
  (void)q.ShouldNotify();
  q.Reset();
  Check(!q.configured() && !q.Pop(mem).ok());
  return 0;
}
