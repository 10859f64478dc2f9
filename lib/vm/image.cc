#include "lib/vm/image.h"

#include <limits.h>
#include <unistd.h>

#include <cstdlib>

#if defined(__APPLE__)
#include <mach-o/dyld.h>
#endif

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lib/base/files.h"
#include "lib/base/strings.h"
#include "lib/base/version.h"

namespace fun::vm {

std::string ExecutableDir() {
  char buf[PATH_MAX + 1] = {};
#if defined(__APPLE__)
  uint32_t size = PATH_MAX;
  if (_NSGetExecutablePath(buf, &size) != 0) return ".";
  char real[PATH_MAX + 1] = {};
  if (::realpath(buf, real) != nullptr) std::snprintf(buf, sizeof(buf), "%s", real);
#else
  ssize_t n = ::readlink("/proc/self/exe", buf, PATH_MAX);
  if (n <= 0) return ".";
  buf[n] = '\0';
#endif
  std::string p(buf);
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

std::vector<std::string> ImageSearchPath(const Paths& paths, const std::string& explicit_dir) {
  if (!explicit_dir.empty()) return {explicit_dir};
  std::vector<std::string> dirs;
  // $FUN_IMAGE_DIR is as explicit as a flag: a broken image there is an error, never a reason
  // to boot another one.
  const char* env = std::getenv("FUN_IMAGE_DIR");  // NOLINT(concurrency-mt-unsafe)
  if (env != nullptr && *env != '\0') return {env};
  dirs.push_back(paths.ImageDir(kVersion));
  std::string bin = ExecutableDir();
  dirs.push_back(bin + "/../linuxkit");
  dirs.push_back(bin + "/../share/fun/image");
  return dirs;
}

std::string SystemDiskSerial(std::string_view cmdline) {
  constexpr std::string_view kKey = "fun.system=";
  std::string serial;
  for (const std::string& word : SplitWords(cmdline, " \t\n")) {
    if (word.starts_with(kKey)) serial = word.substr(kKey.size());
  }
  return serial;
}

bool IsVirtioDiskPath(std::string_view value) {
  constexpr std::string_view kPrefix = "/dev/vd";
  if (!value.starts_with(kPrefix)) return false;
  std::string_view letters = value.substr(kPrefix.size());
  return !letters.empty() && letters.size() <= 3 &&
         letters.find_first_not_of("abcdefghijklmnopqrstuvwxyz") == std::string_view::npos;
}

bool IsValidDiskSerial(std::string_view serial) {
  return !serial.empty() && serial.size() <= 20 &&
         serial.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") ==
             std::string_view::npos;
}

StatusOr<ImageFiles> ReadImageFiles(const std::string& dir) {
  constexpr std::string_view kRebuild = "build the VM image with linuxkit/build.sh";
  ImageFiles f;
  // fun-kernel.pvh (the same kernel, uncompressed, with a PVH entry) boots seconds faster
  // under TCG than the compressed bzImage of LinuxKit's layout: use it when the image has it.
  f.kernel = dir + "/fun-kernel.pvh";
  if (::access(f.kernel.c_str(), R_OK) != 0) f.kernel = dir + "/fun-kernel";
  f.initrd = dir + "/fun-initrd.img";
  for (const std::string& p : {f.kernel, f.initrd}) {
    if (::access(p.c_str(), R_OK) != 0) {
      return NotFoundError(fmt::format("{} is missing: {}", p, kRebuild));
    }
  }
  FUN_ASSIGN_OR_RETURN(f.cmdline, ReadFileToString(dir + "/fun-cmdline"));
  f.cmdline = std::string(TrimSpace(f.cmdline));
  f.system_disk_serial = SystemDiskSerial(f.cmdline);
  if (!f.system_disk_serial.empty()) {
    const std::string named = f.system_disk_serial;
    if (IsVirtioDiskPath(named)) {
      f.system_disk_serial.clear();
    } else if (!IsValidDiskSerial(named)) {
      return FailedPreconditionError(
          fmt::format("{}/fun-cmdline: fun.system={} is neither a disk serial (1-20 of a-z, 0-9, "
                      "-) nor a /dev/vdX path: {}",
                      dir, named, kRebuild));
    }
    f.system_disk = dir + "/" + kSystemDiskFile;
    if (::access(f.system_disk.c_str(), R_OK) != 0) {
      return NotFoundError(fmt::format(
          "{} is missing, and fun-cmdline names it (fun.system={}): the VM has no containerd "
          "without it; {}",
          f.system_disk, named, kRebuild));
    }
  }
  return f;
}

StatusOr<std::string> FindImageDir(const Paths& paths, const std::string& explicit_dir) {
  std::vector<std::string> dirs = ImageSearchPath(paths, explicit_dir);
  std::vector<std::string> incomplete;
  for (const auto& d : dirs) {
    if (::access((d + "/fun-kernel").c_str(), R_OK) == 0 &&
        ::access((d + "/fun-initrd.img").c_str(), R_OK) == 0 &&
        ::access((d + "/fun-cmdline").c_str(), R_OK) == 0) {
      if (auto files = ReadImageFiles(d); !files.ok()) {
        incomplete.push_back(files.status().message());
        continue;
      }
      char real[PATH_MAX + 1] = {};
      return ::realpath(d.c_str(), real) != nullptr ? std::string(real) : d;
    }
  }
  if (!incomplete.empty()) return NotFoundError(incomplete.front());
  return NotFoundError(
      fmt::format("no VM image (fun-kernel, fun-initrd.img, fun-cmdline) in {}: build one with "
                  "linuxkit/build.sh (ci/demo.sh does)",
                  fmt::join(dirs, ", ")));
}

}  // namespace fun::vm
