// share_table.h: which host folders the VM mounts, and how, as the host tells the guest.
//
// fun-hostd serves each share of the instance over 9P (lib/p9) on one virtio-serial port per
// share, named "fun.p9.<tag>", and hands the guest this table as the fw_cfg file
// opt/fun/shares. fun-guestd reads it at start, relays each port to a unix socket of its own
// (/run/fun/p9/<tag>.sock: a path in the VM's mount namespace, which containers do not see) and
// mounts the share there with the kernel's v9fs client (trans=unix). Pure: bytes in, table out,
// and back.
//
// The table is text, one share a line after a version line; the path comes last so it may hold
// spaces:
//
//   fun-shares 1
//   users-alice rw mmap /Users/alice
//   data ro loose /srv/data
//
// The guest decodes it strictly (tag [a-z0-9_-]{1,31}, unique; "ro" or "rw"; the v9fs cache
// mode "mmap", "loose" or "none"; an absolute path
// without "." or ".." components, control characters or a trailing "/", not "/" itself, at most
// kMaxSharePathLength bytes, unique; at most kMaxShares lines) and the decoder is fuzzed
// (fuzz/share_table_fuzzer.cc). What decodes re-encodes to the same bytes.
//
//   FUN_ASSIGN_OR_RETURN(std::string wire, EncodeShareTable(shares));   // fun-hostd
//   FUN_ASSIGN_OR_RETURN(std::vector<GuestShare> s, DecodeShareTable(wire));  // fun-guestd
//   std::string opts = NinePMountOptions(s[0], {});   // the mount(2) data for v9fs
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"

namespace fun::net {

// One virtio-serial port per share: QEMU's virtio-serial device has 31 ports besides port 0.
inline constexpr size_t kMaxShares = 30;
inline constexpr size_t kMaxShareTableTagLength = 31;
inline constexpr size_t kMaxShareTablePathLength = 4095;
// The virtio-serial port name prefix ("fun.p9." + tag).
inline constexpr std::string_view kSharePortPrefix = "fun.p9.";

struct GuestShare {
  std::string tag;         // the 9P aname and the port's suffix
  std::string guest_path;  // where the VM mounts it
  bool read_only = false;
  std::string cache = "mmap";  // v9fs cache mode: "mmap", "loose" or "none"
  friend bool operator==(const GuestShare&, const GuestShare&) = default;
};

// InvalidArgument naming the share when one breaks the rules above.
StatusOr<std::string> EncodeShareTable(const std::vector<GuestShare>& shares);
// InvalidArgument naming the line for anything that is not a table of the form above.
StatusOr<std::vector<GuestShare>> DecodeShareTable(std::string_view text);

// "fun.p9.<tag>".
std::string SharePortName(std::string_view tag);

// How the guest mounts a share; the defaults are what fun-guestd uses (docs/architecture.md,
// "Shared folders", has the trade-offs).
// hyperkit's virtio-9p device reads each reply into one 256 KiB buffer and aborts (taking the
// VM down) on a longer one (its pci_virtio_9p.c, BUFSIZE): trans=virtio mounts negotiate at most
// this msize.
inline constexpr uint32_t kVirtio9pMaxMsize = 256 * 1024;

struct NinePMountSettings {
  // v9fs's fd transports allow up to 1 MiB messages; the server's limit is 1 MiB too.
  uint32_t msize = 512 * 1024;
  // Replaces every share's cache mode when set (measurements).
  std::string cache_override;
};

// The mount(2) data string: "trans=unix,version=9p2000.L,aname=<tag>,msize=...,cache=<the
// share's>,access=client". Cache modes: "mmap" keeps no page cache for data (except shared
// writable mmaps) and no dentries, so an edit on either side is seen by the next read on the
// other, at the price of a walk and a getattr per path component of every lookup; "loose"
// caches dentries, attributes and pages (several times faster on many small files; host edits
// may stay unseen); "none" is "mmap" without mmap support. access=client: the guest's kernel checks
// permissions against the owner and mode the server reports, so a non-root container user gets what
// the mode bits allow.
// `transport` "virtio" is for a virtio-9p device with the share's tag (HyperKit's, relayed by
// hyperkit to fun-hostd's server; the mount source is then the tag itself); its msize is capped
// at kVirtio9pMaxMsize.
std::string NinePMountOptions(const GuestShare& share, const NinePMountSettings& settings,
                              std::string_view transport = "unix");

}  // namespace fun::net
