// host_info_darwin.cc: RealDoctorEnv's memory size and OS name on macOS.
//
// Unverified: no macOS machine builds this project yet. Written to the documented sysctl
// contract: hw.memsize is a uint64_t of bytes; kern.osproductversion (macOS 10.13.4 and later)
// is the product version string ("14.2.1"), so a Mac too old to have it is reported with an
// empty version, which FUN0005 fails as "cannot tell the version". Under Rosetta 2
// (sysctl.proc_translated == 1) the arch is reported as arm64, the Mac's own.
#include <sys/sysctl.h>
#include <sys/types.h>
#include <sys/utsname.h>

#include <cerrno>

#include "lib/base/paths.h"
#include "tools/doctor/doctor_env.h"

namespace fun::doctor {

StatusOr<uint64_t> RealDoctorEnv::TotalMemoryBytes() {
  uint64_t bytes = 0;
  size_t len = sizeof(bytes);
  if (::sysctlbyname("hw.memsize", &bytes, &len, nullptr, 0) != 0) {
    return ErrnoError(errno, "sysctl hw.memsize");
  }
  return bytes;
}

HostOs RealDoctorEnv::GetHostOs() {
  HostOs h;
  h.os = Os::kMacos;
  char buf[64] = {};
  size_t len = sizeof(buf) - 1;
  if (::sysctlbyname("kern.osproductversion", buf, &len, nullptr, 0) == 0) h.version = buf;
  struct utsname u {};
  if (::uname(&u) == 0) h.arch = u.machine;
  // Under Rosetta 2 uname says x86_64 on an arm64 Mac; sysctl.proc_translated says so.
  int translated = 0;
  size_t tlen = sizeof(translated);
  if (::sysctlbyname("sysctl.proc_translated", &translated, &tlen, nullptr, 0) == 0 &&
      translated == 1) {
    h.arch = "arm64";
  }
  return h;
}

}  // namespace fun::doctor
