// initrd_cpio.h: files for the guest in a cpio archive appended to the image's initrd: how the
// instance secret and the share table reach a HyperKit guest, which has no fw_cfg (QEMU passes
// them as fw_cfg files instead). The kernel unpacks every archive of a concatenated initrd in
// turn, later files over earlier ones; an archive must start at a 4-byte boundary (zeros between
// archives are skipped).
//
//   FUN_ASSIGN_OR_RETURN(std::string cpio, BuildNewcArchive({
//       {.path = "etc/fun/instance", .mode = S_IFDIR | 0700},
//       {.path = "etc/fun/instance/secret", .mode = S_IFREG | 0600, .data = token}}));
//   FUN_RETURN_IF_ERROR(WriteAppendedInitrd(image.initrd, cpio, dir + "/initrd.img"));
//
// The format is the kernel's "newc" (cpio -H newc, as `linuxkit build` and initramfs tools
// write): ASCII hex headers, names and data padded to 4 bytes, a TRAILER!!! entry last. Every
// entry is owned by root, dated 0 (reproducible), one link.
// Thread-safety: pure, except WriteAppendedInitrd (files).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"

namespace fun::vm {

struct CpioEntry {
  std::string path;  // relative, no "." or ".." components ("etc/fun/instance/secret")
  mode_t mode = 0;   // file type and permissions: S_IFREG | 0600, S_IFDIR | 0700
  std::string data;  // regular files only
};

// The archive of `entries` in order (parents before children), trailer included. Refuses
// absolute or escaping paths, types other than regular files and directories, and data on a
// directory.
StatusOr<std::string> BuildNewcArchive(const std::vector<CpioEntry>& entries);

// The instance's own files for a guest without fw_cfg (HyperKit), as guest/init looks for
// them: /etc/fun/instance/secret (the agent token, 0600) and, when `share_table` is not empty,
// /etc/fun/instance/shares (lib/net/share_table.h's wire form).
StatusOr<std::string> InstanceFilesArchive(std::string_view secret, std::string_view share_table);

// Writes `out` (mode 0600: it may hold the instance secret) as the initrd at `base` padded to 4
// bytes followed by `archive`, atomically: a reader sees the old file or the whole new one.
Status WriteAppendedInitrd(const std::string& base, std::string_view archive,
                           const std::string& out);

}  // namespace fun::vm
