// accel.h: choosing the hypervisor accelerator so that a start never hangs.
//
// KVM is used only when it can really boot a VM: /dev/kvm present and usable AND a standard KVM
// module (kvm_intel / kvm_amd), not PVM (kvm_pvm: a paravirtual KVM that cannot boot a stock
// kernel — a start under it hangs). HVF on macOS when kern.hv_support says so; TCG otherwise.
// Every choice carries its reason, shown by `fun-vmctl status` and the doctor.
//
//   HostFacts facts = ProbeHostFacts();            // reads /dev, /sys (or sysctl on macOS)
//   FUN_ASSIGN_OR_RETURN(AccelChoice c, ChooseAccel(cfg.accel, cfg.backend, facts));
//   // c.accel == Accel::kTcg, c.reason == "KVM is PVM (kvm_pvm loaded), which cannot boot ..."
//
// ChooseAccel is pure, so every branch is tested with made-up facts.
// Thread-safety: pure / read-only.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "lib/base/instance_config.h"
#include "lib/base/paths.h"
#include "lib/base/status.h"

namespace fun::vm {

struct HostFacts {
  Os os = Os::kLinux;
  std::string arch = "x86_64";  // uname -m
  bool dev_kvm_exists = false;  // /dev/kvm
  bool dev_kvm_usable = false;  // opened read-write by this user
  std::string dev_kvm_error;    // why not, when it exists but is not usable
  bool kvm_pvm = false;         // /sys/module/kvm_pvm
  bool kvm_standard = false;    // /sys/module/kvm_intel or /sys/module/kvm_amd
  bool hvf_supported = false;   // macOS: sysctl kern.hv_support == 1
};

HostFacts ProbeHostFacts();

struct AccelChoice {
  Accel accel = Accel::kTcg;
  std::string reason;  // one line: why this one (and why not the faster one)
};

// Errors (FailedPrecondition, one line, with what to do) only when the config demands an
// accelerator that cannot work here.
StatusOr<AccelChoice> ChooseAccel(Accel requested, Backend backend, const HostFacts& facts);

// One place to look for the hypervisor: a program name searched in $PATH, or a fixed path.
struct HypervisorCandidate {
  std::string program;  // "qemu-system-x86_64" or "/usr/local/bin/hyperkit"
  bool search_path = false;
  std::string why;  // "bundled next to the tools", "in $PATH", "Homebrew / manual install"
};
// Where the hypervisor of `backend` is looked for, in order (empty for the native backend):
//   Linux, qemu:   qemu-system-x86_64 in $PATH (what fun-hostd runs).
//   macOS, qemu:   <exe_dir>/qemu-system-<x86_64|aarch64> (bundled), then that name in $PATH.
//   macOS, hyperkit: <exe_dir>/hyperkit (bundled), then /usr/local/bin/hyperkit.
//   Linux, hyperkit: none (hyperkit runs only on macOS).
std::vector<HypervisorCandidate> HypervisorCandidates(Os os, std::string_view arch, Backend backend,
                                                      const std::string& exe_dir);
// The hypervisor fun-hostd runs when not told: the first fixed-path candidate that is an
// executable file, or a $PATH candidate's name (exec searches $PATH); with none of those, the
// first candidate's program (starting it then fails naming it). "" when there is none at all.
std::string ChooseHypervisor(const std::vector<HypervisorCandidate>& candidates);

}  // namespace fun::vm
