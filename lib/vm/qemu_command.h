// qemu_command.h: the QEMU command line for an instance, as a pure function of a spec, so every
// flag is unit-tested and the doctor can show exactly what runs.
//
//   QemuSpec spec{.accel = Accel::kTcg, .cpus = 2, .memory_mib = 2048, ...};
//   std::vector<std::string> argv = BuildQemuArgs(spec);   // without the binary itself
//
// Devices: virtio-net on QEMU's user-mode network (slirp: the guest is 10.0.2.15, the host's
// loopback 10.0.2.2, DNS 10.0.2.3) with one hostfwd from 127.0.0.1:<agent_host_port> to the
// guest agent's port — the agent channel, authenticated by the per-instance token; virtio-blk
// for the data disk (serial fun-data) and the image's read-only system disk; virtio-rng; the token
// as fw_cfg file opt/fun/secret (never on a command line); the serial console to console.log; QMP
// on a unix socket; a virtio-serial port per shared folder, carrying 9P to fun-hostd's server (the
// guest relays it to v9fs, see guest/guestd/shares.h); no firmware menus, no display, no default
// devices.
//
// Thread-safety: pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/instance_config.h"
#include "lib/base/status.h"
#include "lib/net/agent_client.h"

namespace fun::vm {

struct QemuSpec {
  std::string binary = "qemu-system-x86_64";
  std::string machine = "q35";  // "q35", "pc" (PCI devices) or "microvm" (virtio-mmio)
  Accel accel = Accel::kTcg;
  // TCG only: one host thread per vCPU ("thread=multi", QEMU's default) or one for all
  // ("thread=single"): the config's tcg_threads (see InstanceConfig::tcg_threads).
  bool tcg_multi_thread = true;
  int cpus = 2;
  int memory_mib = 2048;
  std::string kernel;     // fun-kernel
  std::string initrd;     // fun-initrd.img
  std::string cmdline;    // fun-cmdline's contents
  std::string data_disk;  // raw image; empty: none (the guest keeps containerd on tmpfs)
  // The image's read-only system disk (lib/vm/image.h), attached after the data disk with its
  // serial (none when the image names it by /dev path); empty: none.
  std::string system_disk;
  std::string system_disk_serial;
  std::string console_log;  // serial console output
  std::string qmp_socket;   // unix socket path
  std::string pid_file;
  std::string secret_file;  // the agent token (32 bytes)
  uint16_t agent_host_port = 0;
  uint16_t agent_guest_port = agent::kGuestAgentPort;
  // Shared folders: one virtio-serial port per share, named "fun.p9.<tag>", each connected to
  // the host's 9P server at p9_socket (QEMU is the client: the server must listen first), and
  // the share table (lib/net/share_table.h) as fw_cfg file opt/fun/shares.
  std::vector<std::string> share_tags;
  std::string p9_socket;
  std::string share_table_file;
  // A vsock device served by fun-hostd (lib/vsock/device.h) on this vhost-user socket: the
  // guest's memory becomes a shared memfd (vhost-user needs it) and QEMU gets
  // vhost-user-vsock-{pci,device}. With p9_vsock_port set too, the shares travel over it
  // instead of serial ports: the fw_cfg file opt/fun/p9-vsock holds the port.
  std::string vsock_socket;
  uint32_t p9_vsock_port = 0;
  // Appended as they are after everything else: $FUN_QEMU_EXTRA_ARGS, a hook for measurements
  // and debugging (perf/p9_vm.sh adds a `-virtfs` device to compare with QEMU's own 9P). Not
  // validated: whoever sets it owns the result.
  std::vector<std::string> extra_args;
};

// The environment variable fun-hostd reads extra QEMU arguments from.
inline constexpr const char kQemuExtraArgsEnv[] = "FUN_QEMU_EXTRA_ARGS";

// $FUN_QEMU_EXTRA_ARGS as arguments: split on spaces and tabs, empty pieces dropped. No quoting:
// an argument cannot contain a space (QEMU's own option syntax seldom needs one).
//   SplitQemuExtraArgs(" -virtfs local,path=/d,mount_tag=t  -s") == {"-virtfs", "local,...", "-s"}
std::vector<std::string> SplitQemuExtraArgs(std::string_view value);

// Refuses specs that cannot work (missing kernel, no secret, unix paths over 107 bytes, ...).
Status ValidateQemuSpec(const QemuSpec& spec);

std::vector<std::string> BuildQemuArgs(const QemuSpec& spec);

}  // namespace fun::vm
