// The vhost-user codec (lib/vhost/message.h) on whatever QEMU, or anything posing as it, could
// send: no crash, and every decoded value keeps the decoder's promises and re-encodes to the
// bytes it came from where an encoder exists.
//
// The input is a message as it arrives on the socket (a 12-byte header, then the payload),
// decoded the way the back-end would; every decoder also runs on the whole input and on the
// part after the header, so each sees bytes of every length.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "lib/vhost/message.h"

namespace {

using namespace fun::vhost;

void Check(bool ok) {
  if (!ok) std::abort();
}

bool SameBytes(const std::string& s, std::span<const uint8_t> b) {
  return s.size() == b.size() && (b.empty() || std::memcmp(s.data(), b.data(), b.size()) == 0);
}

std::string LittleEndian64(uint64_t v) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  return out;
}

void DecodeAll(std::span<const uint8_t> p) {
  if (auto v = DecodeU64(p); v.ok()) {
    std::string reply = EncodeReplyU64(1, *v);
    Check(SameBytes(reply.substr(kHeaderSize), p));
  }

  if (auto s = DecodeVringState(p); s.ok()) {
    std::string reply = EncodeReplyVringState(11, *s);
    Check(SameBytes(reply.substr(kHeaderSize), p));
    auto h = DecodeHeader(std::span(reinterpret_cast<const uint8_t*>(reply.data()), kHeaderSize));
    Check(h.ok() && h->size == 8 && h->flags == (kVersion | kFlagReply));
  }

  if (auto a = DecodeVringAddr(p); a.ok()) {
    Check((a->flags & 1) == 0);
    std::string again;
    again += LittleEndian64(uint64_t{a->flags} << 32 | a->index);
    again += LittleEndian64(a->desc) + LittleEndian64(a->used) + LittleEndian64(a->avail) +
             LittleEndian64(a->log);
    Check(SameBytes(again, p));
  }

  if (auto f = DecodeVringFd(p); f.ok()) {
    Check(f->index <= 0xff);
    Check(SameBytes(LittleEndian64(f->index | (f->no_fd ? 0x100u : 0u)), p));
  }

  if (auto t = DecodeMemTable(p); t.ok()) {
    Check(!t->empty() && t->size() <= kMaxMemoryRegions);
    Check(p.size() >= 8 + 32 * t->size() && p.size() <= 8 + 32 * kMaxMemoryRegions);
    for (size_t i = 0; i < t->size(); ++i) {
      const MemoryRegion& r = (*t)[i];
      Check(r.size > 0);
      Check(r.guest_phys_addr <= UINT64_MAX - r.size);
      Check(r.user_addr <= UINT64_MAX - r.size);
      Check(r.mmap_offset <= UINT64_MAX - r.size);
      for (size_t j = 0; j < i; ++j) {
        const MemoryRegion& o = (*t)[j];
        Check(r.guest_phys_addr + r.size <= o.guest_phys_addr ||
              o.guest_phys_addr + o.size <= r.guest_phys_addr);
        Check(r.user_addr + r.size <= o.user_addr || o.user_addr + o.size <= r.user_addr);
      }
    }
  }

  if (auto c = DecodeConfig(p); c.ok()) {
    Check(c->size <= kMaxConfigSize && c->data.size() == c->size);
    std::string reply = EncodeReplyConfig(24, *c, c->data);
    Check(SameBytes(reply.substr(kHeaderSize), p));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  DecodeAll(in);
  auto h = DecodeHeader(in.first(std::min(size, kHeaderSize)));
  if (!h.ok()) return 0;
  Check(size >= kHeaderSize && h->size <= kMaxPayload && (h->flags & kFlagVersionMask) == kVersion);
  Check(SameBytes(EncodeHeader(*h), in.first(kHeaderSize)));
  Check(!RequestName(h->request).empty());
  std::span<const uint8_t> payload = in.subspan(kHeaderSize);
  DecodeAll(payload);
  // The payload as the header sizes it, when enough bytes came.
  if (payload.size() > h->size) DecodeAll(payload.first(h->size));
  return 0;
}
