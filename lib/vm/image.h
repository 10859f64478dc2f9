// image.h: finding the VM image (LinuxKit's kernel+initrd layout: fun-kernel, fun-initrd.img,
// fun-cmdline). Searched in order: an explicit directory (--image-dir), $FUN_IMAGE_DIR,
// <state>/images/<version>, then beside the tools: <bin>/../linuxkit (a build tree, where
// linuxkit/build.sh writes by default) and <bin>/../share/fun/image (an install).
//
//   FUN_ASSIGN_OR_RETURN(std::string dir, FindImageDir(paths, flag_value));
//
// Thread-safety: reads the environment and the file system.
#pragma once

#include <string>
#include <vector>

#include "lib/base/paths.h"
#include "lib/base/status.h"

namespace fun::vm {

// The directories FindImageDir looks in, in order (for messages and the doctor).
std::vector<std::string> ImageSearchPath(const Paths& paths, const std::string& explicit_dir);
// NotFound naming every place looked and how to build an image.
StatusOr<std::string> FindImageDir(const Paths& paths, const std::string& explicit_dir);
// The directory holding the running program (from /proc/self/exe or _NSGetExecutablePath).
std::string ExecutableDir();

}  // namespace fun::vm
