// image.h: finding the VM image (LinuxKit's kernel+initrd layout: fun-kernel, fun-initrd.img,
// fun-cmdline). Searched in order: an explicit directory (--image-dir), $FUN_IMAGE_DIR,
// <state>/images/<version>, then beside the tools: <bin>/../linuxkit (a build tree, where
// linuxkit/build.sh writes by default) and <bin>/../share/fun/image (an install).
//
// An image may also have a system disk, fun-system.img: a read-only ext4 holding the big guest
// binaries (containerd, runc, the CNI plugins), which the initrd links to. Its fun-cmdline then
// says fun.system=<serial>, the virtio serial the guest's /init finds it by: that word makes the
// disk a required part of the image (a VM without it has no containerd).
//
//   FUN_ASSIGN_OR_RETURN(std::string dir, FindImageDir(paths, flag_value));
//
// Thread-safety: reads the environment and the file system.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "lib/base/paths.h"
#include "lib/base/status.h"

namespace fun::vm {

inline constexpr const char kSystemDiskFile[] = "fun-system.img";
// The virtio serial of the data disk (the guest's /init finds it by it).
inline constexpr const char kDataDiskSerial[] = "fun-data";

// The system disk named by a kernel command line (fun.system=SERIAL, or fun.system=/dev/vdX:
// the disk in that place of the virtio disks), or "" when it names none. The last word wins, as
// in the guest.
//   SystemDiskSerial("console=ttyS0 fun.system=fun-system") == "fun-system"
std::string SystemDiskSerial(std::string_view cmdline);
// A virtio-blk serial QEMU and HyperKit take as is: 1-20 bytes of [a-z0-9-].
bool IsValidDiskSerial(std::string_view serial);
// fun.system=/dev/vdX: "/dev/vd" and 1-3 letters.
bool IsVirtioDiskPath(std::string_view value);

// The files of the image in `dir` that a hypervisor is given.
struct ImageFiles {
  std::string kernel;  // fun-kernel.pvh when present (QEMU boots it faster), else fun-kernel
  std::string initrd;
  std::string cmdline;      // fun-cmdline's contents, trailing blanks removed
  std::string system_disk;  // <dir>/fun-system.img, or "" when the image has none
  // From the command line; "" when it names the disk by /dev path (attached second, after the
  // data disk, so the guest sees it as /dev/vdb).
  std::string system_disk_serial;
};
// NotFound/FailedPrecondition naming the missing or bad file and how to rebuild the image.
StatusOr<ImageFiles> ReadImageFiles(const std::string& dir);

// The directories FindImageDir looks in, in order (for messages and the doctor).
std::vector<std::string> ImageSearchPath(const Paths& paths, const std::string& explicit_dir);
// NotFound naming every place looked and how to build an image.
StatusOr<std::string> FindImageDir(const Paths& paths, const std::string& explicit_dir);
// The directory holding the running program (from /proc/self/exe or _NSGetExecutablePath).
std::string ExecutableDir();

}  // namespace fun::vm
