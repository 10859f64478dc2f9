#include "lib/vm/image.h"

#include <limits.h>
#include <unistd.h>

#include <cstdlib>

#if defined(__APPLE__)
#include <mach-o/dyld.h>
#endif

#include <fmt/format.h>
#include <fmt/ranges.h>

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
  const char* env = std::getenv("FUN_IMAGE_DIR");  // NOLINT(concurrency-mt-unsafe)
  if (env != nullptr && *env != '\0') dirs.emplace_back(env);
  dirs.push_back(paths.ImageDir(kVersion));
  std::string bin = ExecutableDir();
  dirs.push_back(bin + "/../linuxkit");
  dirs.push_back(bin + "/../share/fun/image");
  return dirs;
}

StatusOr<std::string> FindImageDir(const Paths& paths, const std::string& explicit_dir) {
  std::vector<std::string> dirs = ImageSearchPath(paths, explicit_dir);
  for (const auto& d : dirs) {
    if (::access((d + "/fun-kernel").c_str(), R_OK) == 0 &&
        ::access((d + "/fun-initrd.img").c_str(), R_OK) == 0 &&
        ::access((d + "/fun-cmdline").c_str(), R_OK) == 0) {
      char real[PATH_MAX + 1] = {};
      return ::realpath(d.c_str(), real) != nullptr ? std::string(real) : d;
    }
  }
  return NotFoundError(
      fmt::format("no VM image (fun-kernel, fun-initrd.img, fun-cmdline) in {}: build one with "
                  "linuxkit/build.sh (ci/demo.sh does)",
                  fmt::join(dirs, ", ")));
}

}  // namespace fun::vm
