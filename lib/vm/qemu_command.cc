#include "lib/vm/qemu_command.h"

#include <fmt/format.h>

#include "lib/base/strings.h"
#include "lib/net/share_table.h"
#include "lib/vm/image.h"

namespace fun::vm {

Status ValidateQemuSpec(const QemuSpec& s) {
  auto need = [](const std::string& v, std::string_view what) {
    return v.empty() ? InvalidArgumentError(fmt::format("qemu spec: no {}", what)) : OkStatus();
  };
  FUN_RETURN_IF_ERROR(need(s.binary, "qemu binary"));
  FUN_RETURN_IF_ERROR(need(s.kernel, "kernel"));
  FUN_RETURN_IF_ERROR(need(s.initrd, "initrd"));
  FUN_RETURN_IF_ERROR(need(s.console_log, "console log"));
  FUN_RETURN_IF_ERROR(need(s.qmp_socket, "QMP socket"));
  FUN_RETURN_IF_ERROR(need(s.secret_file, "secret file"));
  if (s.machine != "q35" && s.machine != "pc" && s.machine != "microvm") {
    return InvalidArgumentError("qemu spec: machine must be q35, pc or microvm, not " + s.machine);
  }
  if (s.accel != Accel::kTcg && s.accel != Accel::kKvm && s.accel != Accel::kHvf) {
    return InvalidArgumentError("qemu spec: accel must be resolved to kvm, hvf or tcg");
  }
  if (s.qmp_socket.size() > 107) {
    return InvalidArgumentError(fmt::format(
        "the QMP socket path is {} bytes, unix sockets allow 107: {} (set FUN_HOME to a shorter "
        "directory)",
        s.qmp_socket.size(), s.qmp_socket));
  }
  if (s.agent_host_port == 0) return InvalidArgumentError("qemu spec: no agent host port");
  if (!s.share_tags.empty()) {
    FUN_RETURN_IF_ERROR(need(s.p9_socket, "9P socket"));
    FUN_RETURN_IF_ERROR(need(s.share_table_file, "share table"));
    if (s.share_tags.size() > net::kMaxShares) {
      return InvalidArgumentError(
          fmt::format("{} shares; the VM takes at most {}", s.share_tags.size(), net::kMaxShares));
    }
    if (s.p9_socket.size() > 107) {
      return InvalidArgumentError(fmt::format(
          "the 9P socket path is {} bytes, unix sockets allow 107: {} (set FUN_HOME to a shorter "
          "directory)",
          s.p9_socket.size(), s.p9_socket));
    }
    for (const std::string& tag : s.share_tags) {
      if (tag.empty() ||
          tag.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos) {
        return InvalidArgumentError("qemu spec: bad share tag " + tag);
      }
    }
  }
  if (!s.system_disk.empty() && !s.system_disk_serial.empty() &&
      !IsValidDiskSerial(s.system_disk_serial)) {
    return InvalidArgumentError("qemu spec: bad system disk serial '" + s.system_disk_serial + "'");
  }
  if (s.cpus < 1 || s.memory_mib < 128) return InvalidArgumentError("qemu spec: cpus/memory");
  if (s.p9_vsock_port != 0 && s.vsock_socket.empty()) {
    return InvalidArgumentError("qemu spec: shares over vsock need the vsock device's socket");
  }
  if (s.vsock_socket.size() > 107) {
    return InvalidArgumentError(fmt::format(
        "the vsock device's socket path is {} bytes, unix sockets allow 107: {} (set FUN_HOME to "
        "a shorter directory)",
        s.vsock_socket.size(), s.vsock_socket));
  }
  for (const std::string* p :
       {&s.kernel, &s.initrd, &s.data_disk, &s.system_disk, &s.console_log, &s.secret_file,
        &s.pid_file, &s.p9_socket, &s.share_table_file, &s.vsock_socket}) {
    // QEMU's option parser splits on ','; a path with one would be misread.
    if (p->find(',') != std::string::npos) {
      return InvalidArgumentError("a path with ',' cannot be given to QEMU: " + *p);
    }
  }
  return OkStatus();
}

std::vector<std::string> BuildQemuArgs(const QemuSpec& s) {
  const bool mmio = s.machine == "microvm";
  auto dev = [mmio](std::string_view name) {
    return fmt::format("{}-{}", name, mmio ? "device" : "pci");
  };
  std::vector<std::string> a;
  auto add = [&a](std::initializer_list<std::string> items) { a.insert(a.end(), items); };
  std::string accel = s.accel == Accel::kKvm   ? "kvm"
                      : s.accel == Accel::kHvf ? "hvf"
                      : s.tcg_multi_thread     ? "tcg,thread=multi"
                                               : "tcg,thread=single";
  std::string machine = s.machine;
  if (mmio) machine += ",rtc=on";  // the guest sets its clock from the RTC at boot
  // vhost-user: the device's process maps the guest's memory, so it must be a shared file.
  if (!s.vsock_socket.empty()) machine += ",memory-backend=mem";
  add({"-machine", machine, "-accel", accel});
  // TCG: "max" gives the guest every feature TCG emulates; with hardware, the host's CPU.
  add({"-cpu", s.accel == Accel::kTcg ? "max" : "host"});
  add({"-smp", std::to_string(s.cpus), "-m", fmt::format("{}M", s.memory_mib)});
  if (!s.vsock_socket.empty()) {
    add({"-object", fmt::format("memory-backend-memfd,id=mem,size={}M,share=on", s.memory_mib)});
  }
  add({"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"});
  add({"-rtc", "base=utc,clock=host"});
  add({"-kernel", s.kernel, "-initrd", s.initrd, "-append", s.cmdline});
  add({"-chardev", fmt::format("file,id=console,path={}", s.console_log), "-serial",
       "chardev:console"});
  add({"-qmp", fmt::format("unix:{},server=on,wait=off", s.qmp_socket)});
  if (!s.pid_file.empty()) add({"-pidfile", s.pid_file});
  add({"-netdev",
       fmt::format("user,id=net0,hostfwd=tcp:127.0.0.1:{}-:{}", s.agent_host_port,
                   s.agent_guest_port),
       // romfile=: no iPXE option ROM to load (we boot the kernel directly): ~0.5 s under TCG.
       "-device", dev("virtio-net") + (mmio ? ",netdev=net0" : ",netdev=net0,romfile=")});
  if (!s.data_disk.empty()) {
    add({"-drive",
         fmt::format("if=none,id=data,file={},format=raw,discard=unmap,cache=writeback",
                     s.data_disk),
         "-device", dev("virtio-blk") + ",drive=data,serial=" + kDataDiskSerial});
  }
  if (!s.system_disk.empty()) {
    add({"-drive", fmt::format("if=none,id=system,file={},format=raw,readonly=on", s.system_disk),
         "-device",
         s.system_disk_serial.empty()
             ? dev("virtio-blk") + ",drive=system"
             : fmt::format("{},drive=system,serial={}", dev("virtio-blk"), s.system_disk_serial)});
  }
  add({"-device", dev("virtio-rng")});
  add({"-fw_cfg", fmt::format("name=opt/fun/secret,file={}", s.secret_file)});
  if (!s.vsock_socket.empty()) {
    add({"-chardev", fmt::format("socket,id=vsock0,path={}", s.vsock_socket), "-device",
         dev("vhost-user-vsock") + ",chardev=vsock0"});
  }
  if (!s.share_tags.empty() && s.p9_vsock_port != 0) {
    add({"-fw_cfg", fmt::format("name=opt/fun/p9-vsock,string={}", s.p9_vsock_port)});
    add({"-fw_cfg", fmt::format("name=opt/fun/shares,file={}", s.share_table_file)});
  } else if (!s.share_tags.empty()) {
    // Port 0 is reserved for a console; shares take 1..N.
    add({"-device",
         fmt::format("{},id=vser0,max_ports={}", dev("virtio-serial"), s.share_tags.size() + 1)});
    for (size_t i = 0; i < s.share_tags.size(); ++i) {
      add({"-chardev", fmt::format("socket,id=p9-{},path={}", i, s.p9_socket), "-device",
           fmt::format("virtserialport,bus=vser0.0,nr={},chardev=p9-{},name={}", i + 1, i,
                       net::SharePortName(s.share_tags[i]))});
    }
    add({"-fw_cfg", fmt::format("name=opt/fun/shares,file={}", s.share_table_file)});
  }
  a.insert(a.end(), s.extra_args.begin(), s.extra_args.end());
  return a;
}

std::vector<std::string> SplitQemuExtraArgs(std::string_view value) {
  return SplitWords(value, " \t");
}

}  // namespace fun::vm
