#include "lib/vm/hyperkit_command.h"

#include <fmt/format.h>

#include <cctype>

#include "lib/net/agent_client.h"
#include "lib/net/share_table.h"

namespace fun::vm {

namespace {

// macOS's sockaddr_un.sun_path holds 104 bytes with the terminating NUL.
constexpr size_t kMacUnixPathMax = 103;

// Slots: 0 hostbridge and 31 lpc are fixed; devices count up from 1; shares follow the rest.
constexpr int kSlotNet = 1, kSlotData = 2, kSlotSystem = 3, kSlotVsock = 4, kSlotRnd = 5;
constexpr int kSlotFirstShare = 6, kSlotLpc = 31;

}  // namespace

bool IsHyperkitUuid(std::string_view u) {
  if (u.size() != 36) return false;
  for (size_t i = 0; i < u.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? u[i] != '-' : !std::isxdigit(static_cast<unsigned char>(u[i]))) return false;
  }
  return true;
}

std::string DescribeHyperkitExit(int status) {
  switch (status) {
    case kHyperkitExitPoweroff:
      return "the guest powered off";
    case kHyperkitExitReset:
      return "the guest rebooted itself";
    case kHyperkitExitTripleFault:
      return "the guest CPU triple-faulted (a crash before the kernel could report it)";
    case kHyperkitExitError:
      return "hyperkit failed (its messages are in hostd.log)";
    case kHyperkitExitSuspend:
      return "the guest asked for a suspend hyperkit does not support";
    default:
      return fmt::format("hyperkit exited with status {}", status);
  }
}

Status ValidateHyperkitSpec(const HyperkitSpec& s) {
  auto need = [](const std::string& v, std::string_view what) {
    return v.empty() ? InvalidArgumentError(fmt::format("hyperkit spec: no {}", what)) : OkStatus();
  };
  FUN_RETURN_IF_ERROR(need(s.binary, "hyperkit binary"));
  FUN_RETURN_IF_ERROR(need(s.kernel, "kernel"));
  FUN_RETURN_IF_ERROR(need(s.initrd, "initrd"));
  FUN_RETURN_IF_ERROR(need(s.pid_file, "pid file"));
  FUN_RETURN_IF_ERROR(need(s.vsock_dir, "vsock directory"));
  if (s.cpus < 1 || s.memory_mib < 128) return InvalidArgumentError("hyperkit spec: cpus/memory");
  if (s.vmnet && !IsHyperkitUuid(s.uuid)) {
    return InvalidArgumentError("hyperkit spec: vmnet needs a UUID (8-4-4-4-12 hex), not '" +
                                s.uuid + "'");
  }
  for (const std::string* p :
       {&s.kernel, &s.initrd, &s.data_disk, &s.system_disk, &s.vsock_dir, &s.p9_socket}) {
    if (p->find(',') != std::string::npos) {
      return InvalidArgumentError("a path with ',' cannot be given to hyperkit: " + *p);
    }
  }
  // hyperkit creates <vsock_dir>/connect and 00000002.<port> sockets there.
  const std::string connect = s.vsock_dir + "/connect";
  for (const std::string* p : {&connect, &s.p9_socket}) {
    if (p->size() > kMacUnixPathMax) {
      return InvalidArgumentError(fmt::format(
          "the socket path {} is {} bytes, macOS allows {}: set FUN_HOME to a shorter directory",
          *p, p->size(), kMacUnixPathMax));
    }
  }
  if (!s.shares.empty()) {
    FUN_RETURN_IF_ERROR(need(s.p9_socket, "9P socket"));
    if (s.shares.size() > net::kMaxShares ||
        kSlotFirstShare + static_cast<int>(s.shares.size()) > kSlotLpc) {
      return InvalidArgumentError(
          fmt::format("{} shares; the VM takes at most {}", s.shares.size(), net::kMaxShares));
    }
    for (const HyperkitShare& sh : s.shares) {
      if (sh.tag.empty() ||
          sh.tag.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos) {
        return InvalidArgumentError("hyperkit spec: bad share tag " + sh.tag);
      }
    }
  }
  return OkStatus();
}

std::vector<std::string> BuildHyperkitArgs(const HyperkitSpec& s) {
  std::vector<std::string> a;
  auto add = [&a](std::initializer_list<std::string> items) { a.insert(a.end(), items); };
  auto slot = [&add](int n, std::string_view device) {
    add({"-s", fmt::format("{}:0,{}", n, device)});
  };
  add({"-A", "-u", "-F", s.pid_file});
  add({"-c", std::to_string(s.cpus), "-m", fmt::format("{}M", s.memory_mib)});
  if (s.vmnet) add({"-U", s.uuid});
  slot(0, "hostbridge");
  if (s.vmnet) slot(kSlotNet, "virtio-net");
  if (!s.data_disk.empty()) slot(kSlotData, "virtio-blk," + s.data_disk);
  if (!s.system_disk.empty()) slot(kSlotSystem, "virtio-blk," + s.system_disk + ",ro");
  slot(kSlotVsock, fmt::format("virtio-sock,guest_cid={},path={}", agent::kGuestCid, s.vsock_dir));
  slot(kSlotRnd, "virtio-rnd");
  for (size_t i = 0; i < s.shares.size(); ++i) {
    slot(kSlotFirstShare + static_cast<int>(i),
         fmt::format("virtio-9p,path={},tag={}", s.p9_socket, s.shares[i].tag));
  }
  slot(kSlotLpc, "lpc");
  add({"-l", "com1,stdio"});
  add({"-f", fmt::format("kexec,{},{},{}", s.kernel, s.initrd, s.cmdline)});
  return a;
}

}  // namespace fun::vm
