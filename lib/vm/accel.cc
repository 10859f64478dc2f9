#include "lib/vm/accel.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include <fmt/format.h>

namespace fun::vm {

HostFacts ProbeHostFacts() {
  HostFacts f;
  f.os = CurrentOs();
  struct utsname u {};
  if (::uname(&u) == 0) f.arch = u.machine;
#if defined(__APPLE__)
  int hv = 0;
  size_t len = sizeof(hv);
  f.hvf_supported = ::sysctlbyname("kern.hv_support", &hv, &len, nullptr, 0) == 0 && hv == 1;
#else
  f.dev_kvm_exists = ::access("/dev/kvm", F_OK) == 0;
  if (f.dev_kvm_exists) {
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      f.dev_kvm_usable = true;
      ::close(fd);
    } else {
      f.dev_kvm_error = std::strerror(errno);  // NOLINT(concurrency-mt-unsafe)
    }
  }
  f.kvm_pvm = ::access("/sys/module/kvm_pvm", F_OK) == 0;
  f.kvm_standard =
      ::access("/sys/module/kvm_intel", F_OK) == 0 || ::access("/sys/module/kvm_amd", F_OK) == 0;
#endif
  return f;
}

namespace {

// Why KVM cannot be used, or "" when it can.
std::string KvmProblem(const HostFacts& f) {
  if (f.os != Os::kLinux) return "KVM exists only on Linux";
  if (!f.dev_kvm_exists) return "/dev/kvm is missing (no KVM in this kernel or VM)";
  if (f.kvm_pvm && !f.kvm_standard) {
    return "/dev/kvm is PVM (kvm_pvm loaded), which cannot boot a standard kernel";
  }
  if (!f.dev_kvm_usable) {
    return fmt::format("/dev/kvm cannot be opened: {} (add yourself to the kvm group)",
                       f.dev_kvm_error.empty() ? "permission denied" : f.dev_kvm_error);
  }
  if (!f.kvm_standard) return "no kvm_intel or kvm_amd module is loaded";
  return "";
}

std::string HvfProblem(const HostFacts& f) {
  if (f.os != Os::kMacos) return "HVF exists only on macOS";
  if (!f.hvf_supported) return "kern.hv_support is 0 (no Hypervisor.framework on this Mac)";
  return "";
}

}  // namespace

StatusOr<AccelChoice> ChooseAccel(Accel requested, Backend backend, const HostFacts& f) {
  if (backend == Backend::kNative) return AccelChoice{Accel::kNone, "native backend: no VM"};
  if (backend == Backend::kHyperkit) {
    if (f.os != Os::kMacos) {
      return FailedPreconditionError(
          "backend hyperkit runs only on macOS: set \"backend\": \"qemu\" in config.json");
    }
    std::string p = HvfProblem(f);
    if (!p.empty()) return FailedPreconditionError("hyperkit needs HVF, but " + p);
    return AccelChoice{Accel::kHvf, "hyperkit always uses Hypervisor.framework"};
  }
  switch (requested) {
    case Accel::kTcg:
      return AccelChoice{Accel::kTcg, "accel tcg is set in config.json (software emulation)"};
    case Accel::kKvm: {
      std::string p = KvmProblem(f);
      if (!p.empty()) {
        return FailedPreconditionError(fmt::format(
            "accel kvm is set in config.json, but {}: set \"accel\" to \"auto\" or \"tcg\"", p));
      }
      return AccelChoice{Accel::kKvm, "accel kvm is set in config.json"};
    }
    case Accel::kHvf: {
      std::string p = HvfProblem(f);
      if (!p.empty()) {
        return FailedPreconditionError(fmt::format(
            "accel hvf is set in config.json, but {}: set \"accel\" to \"auto\" or \"tcg\"", p));
      }
      return AccelChoice{Accel::kHvf, "accel hvf is set in config.json"};
    }
    case Accel::kAuto:
    case Accel::kNone:
      break;
  }
  if (f.os == Os::kMacos) {
    std::string p = HvfProblem(f);
    if (p.empty()) return AccelChoice{Accel::kHvf, "Hypervisor.framework is available"};
    return AccelChoice{Accel::kTcg, p + ": using TCG (software emulation, slow)"};
  }
  std::string p = KvmProblem(f);
  if (p.empty()) return AccelChoice{Accel::kKvm, "KVM is available"};
  return AccelChoice{Accel::kTcg, p + ": using TCG (software emulation, slow)"};
}

std::vector<HypervisorCandidate> HypervisorCandidates(Os os, std::string_view arch, Backend backend,
                                                      const std::string& exe_dir) {
  switch (backend) {
    case Backend::kNative:
      return {};
    case Backend::kHyperkit:
      if (os != Os::kMacos) return {};
      return {{exe_dir + "/hyperkit", false, "bundled next to the tools"},
              {"/usr/local/bin/hyperkit", false, "Docker's / Homebrew's location"}};
    case Backend::kQemu:
      break;
  }
  if (os == Os::kMacos) {
    // HVF accelerates only the host's own architecture.
    std::string name =
        arch == "arm64" || arch == "aarch64" ? "qemu-system-aarch64" : "qemu-system-x86_64";
    return {{exe_dir + "/" + name, false, "bundled next to the tools"}, {name, true, "in $PATH"}};
  }
  return {{"qemu-system-x86_64", true, "in $PATH"}};
}

std::string ChooseHypervisor(const std::vector<HypervisorCandidate>& candidates) {
  for (const HypervisorCandidate& c : candidates) {
    if (c.search_path) return c.program;
    struct stat st {};
    if (::stat(c.program.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(c.program.c_str(), X_OK) == 0) {
      return c.program;
    }
  }
  return candidates.empty() ? "" : candidates.front().program;
}

}  // namespace fun::vm
