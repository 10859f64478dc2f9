// host_info_linux.cc: RealDoctorEnv's memory size and OS name on Linux.
#include <sys/utsname.h>

#include "lib/base/paths.h"
#include "tools/doctor/doctor_env.h"

namespace fun::doctor {

StatusOr<uint64_t> RealDoctorEnv::TotalMemoryBytes() {
  FUN_ASSIGN_OR_RETURN(std::string text, ReadFileTail("/proc/meminfo", 64 << 10));
  return ParseMemTotal(text);
}

HostOs RealDoctorEnv::GetHostOs() {
  HostOs h;
  h.os = Os::kLinux;
  struct utsname u {};
  if (::uname(&u) == 0) {
    h.version = u.release;
    h.arch = u.machine;
  }
  return h;
}

}  // namespace fun::doctor
