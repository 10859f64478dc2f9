// hyperkit_command.h: the HyperKit command line for an instance (macOS on Intel), as a pure
// function of a spec, like qemu_command.h: every flag is unit-tested and the doctor can show what
// runs. Built to HyperKit's documented contract (../shared/PROTOCOLS.md section 3, and HyperKit's
// own sources for the details named below); it cannot run here (no Mac): nothing in it has been
// verified against a real hyperkit.
//
//   HyperkitSpec spec{.cpus = 2, .memory_mib = 2048, .kernel = ..., ...};
//   std::vector<std::string> argv = BuildHyperkitArgs(spec);   // without the binary itself
//
// Devices, one PCI slot each, in this order (the guest names its disks by it: vda, vdb):
//   0 hostbridge; 1 virtio-net on vmnet (root or the vmnet entitlement; -U fixes the MAC, so
//   the DHCP lease stays); 2 virtio-blk data disk; 3 virtio-blk system disk (read-only);
//   4 virtio-sock (guest CID 3; the host reaches the guest agent through <vsock_dir>/connect);
//   5 virtio-rnd; 6.. one virtio-9p per shared folder, each relayed by hyperkit to the host's 9P
//   server at p9_socket (guest `mount -t 9p -o trans=virtio,aname=<tag> <tag>`); 31 lpc with
//   com1 on hyperkit's stdio (fun-hostd points stdout at console.log).
// Boot: `-f kexec,<kernel>,<initrd>,<cmdline>`: hyperkit splits the first three commas only,
// so the command line may hold commas, the paths may not. `-A` ACPI tables (SIGTERM then
// presses the ACPI power button), `-u` RTC in UTC, `-F` pid file (created O_EXCL: a stale one
// makes hyperkit fail, fun-hostd removes it first).
// HyperKit has no fw_cfg: the instance secret and the share table reach the guest in a cpio
// appended to the image's initrd (lib/vm/initrd_cpio.h), so `initrd` here is the instance's.
//
// Thread-safety: pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"

namespace fun::vm {

// hyperkit's exit statuses (its vmexit handlers): what fun-hostd records as the VM's end.
inline constexpr int kHyperkitExitPoweroff = 0;     // the guest powered off or halted
inline constexpr int kHyperkitExitReset = 2;        // the guest rebooted (VMs do not reboot here)
inline constexpr int kHyperkitExitTripleFault = 3;  // the guest's CPU triple-faulted
inline constexpr int kHyperkitExitError = 1;        // hyperkit itself failed (see its stderr)
inline constexpr int kHyperkitExitSuspend = 100;    // a suspend request hyperkit does not know

// Words for a hyperkit exit status, for state.json's last_exit and the doctor.
std::string DescribeHyperkitExit(int status);

struct HyperkitShare {
  std::string tag;  // the virtio-9p mount tag, also the 9P attach name (aname)
};

struct HyperkitSpec {
  std::string binary = "hyperkit";
  int cpus = 2;
  int memory_mib = 2048;
  std::string kernel;       // fun-kernel
  std::string initrd;       // the instance's initrd: the image's plus its own cpio
  std::string cmdline;      // fun-cmdline's contents plus the instance's knobs
  std::string data_disk;    // raw image; empty: none
  std::string system_disk;  // the image's read-only system disk; empty: none
  std::string pid_file;     // -F
  std::string vsock_dir;    // virtio-sock path=: hyperkit creates <dir>/connect there
  // vmnet's interface id: the same UUID gives the same MAC, so the same DHCP lease.
  std::string uuid;
  bool vmnet = true;  // false: no network device (tests, or a user without vmnet rights)
  // One virtio-9p device per share, all relayed to the one server at p9_socket (it tells the
  // shares apart by the attach name).
  std::vector<HyperkitShare> shares;
  std::string p9_socket;
};

// A UUID as hyperkit's -U takes it: 8-4-4-4-12 hex digits.
bool IsHyperkitUuid(std::string_view uuid);

// Refuses specs that cannot work: a missing kernel, a path with ',' (hyperkit's option parser
// splits on it), a unix socket path longer than macOS allows (103 bytes), a bad tag or UUID.
Status ValidateHyperkitSpec(const HyperkitSpec& spec);

std::vector<std::string> BuildHyperkitArgs(const HyperkitSpec& spec);

}  // namespace fun::vm
