#include "guest/guestd/settle_kernel.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "lib/base/files.h"
#include "lib/base/unique_fd.h"

namespace fun::guestd {
namespace {

std::string OnlineFile(const std::string& cpu_dir, int cpu) {
  return fmt::format("{}/cpu{}/online", cpu_dir, cpu);
}

Status WriteOnline(const std::string& cpu_dir, int cpu, bool online) {
  const std::string path = OnlineFile(cpu_dir, cpu);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoError(errno, "open " + path);
  const char c = online ? '1' : '0';
  if (::write(fd.get(), &c, 1) != 1) {
    return ErrnoError(errno, fmt::format("write {} to {}", c, path));
  }
  return OkStatus();
}

long Bpf(int cmd, union bpf_attr* attr) { return ::syscall(SYS_bpf, cmd, attr, sizeof(*attr)); }

StatusOr<UniqueFd> OpenCgroup(const std::string& cgroup) {
  UniqueFd fd(::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return ErrnoError(errno, "open the cgroup " + cgroup);
  return fd;
}

}  // namespace

StatusOr<std::vector<int>> TakeSecondaryCpusOffline(const std::string& cpu_dir) {
  // cpuN directories: with an online file that says 1 (they may go offline), or without one
  // (always online: the boot CPU usually).
  std::vector<int> online;
  bool one_stays = false;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(cpu_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() < 4 || name.compare(0, 3, "cpu") != 0) continue;
    if (!std::all_of(name.begin() + 3, name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    const int cpu = std::stoi(name.substr(3));
    if (!std::filesystem::exists(OnlineFile(cpu_dir, cpu))) {
      one_stays = true;
      continue;
    }
    auto state = ReadFileToString(OnlineFile(cpu_dir, cpu));
    if (state.ok() && !state->empty() && (*state)[0] == '1') online.push_back(cpu);
  }
  if (ec) return ErrnoError(ec.value(), "list " + cpu_dir);
  std::sort(online.begin(), online.end());
  // Every CPU may go offline: the lowest stays.
  if (!one_stays && !online.empty()) online.erase(online.begin());
  std::vector<int> offlined;
  for (int cpu : online) {
    Status s = WriteOnline(cpu_dir, cpu, false);
    if (!s.ok()) {
      // Leave the machine as it was.
      BringCpusOnline(cpu_dir, offlined).IgnoreError();
      return s;
    }
    offlined.push_back(cpu);
  }
  return offlined;
}

Status BringCpusOnline(const std::string& cpu_dir, const std::vector<int>& cpus) {
  Status first;
  for (int cpu : cpus) {
    Status s = WriteOnline(cpu_dir, cpu, true);
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

StatusOr<int> DeviceProgramsAttached(const std::string& cgroup) {
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, OpenCgroup(cgroup));
  union bpf_attr attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.query.target_fd = static_cast<__u32>(fd.get());
  attr.query.attach_type = BPF_CGROUP_DEVICE;
  if (Bpf(BPF_PROG_QUERY, &attr) != 0) {
    return ErrnoError(errno, "query the device programs of " + cgroup);
  }
  return static_cast<int>(attr.query.prog_cnt);
}

Status AttachAllowAllDeviceProgram(const std::string& cgroup) {
  if (::mkdir(cgroup.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError(errno, "create the cgroup " + cgroup);
  }
  FUN_ASSIGN_OR_RETURN(int attached, DeviceProgramsAttached(cgroup));
  if (attached > 0) return OkStatus();
  // r0 = 1 (allow); exit.
  struct bpf_insn insns[2];
  std::memset(insns, 0, sizeof(insns));
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = 1;
  insns[1].code = BPF_JMP | BPF_EXIT;
  static const char kLicense[] = "Apache-2.0";  // no helper is called: any license will do
  union bpf_attr load;
  std::memset(&load, 0, sizeof(load));
  load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  load.insn_cnt = 2;
  load.insns = reinterpret_cast<__u64>(insns);
  load.license = reinterpret_cast<__u64>(kLicense);
  std::strncpy(load.prog_name, "fun_allow_all", sizeof(load.prog_name) - 1);
  long prog = Bpf(BPF_PROG_LOAD, &load);
  if (prog < 0) return ErrnoError(errno, "load an allow-all device program (bpf)");
  UniqueFd prog_fd(static_cast<int>(prog));
  FUN_ASSIGN_OR_RETURN(UniqueFd cg, OpenCgroup(cgroup));
  union bpf_attr attach;
  std::memset(&attach, 0, sizeof(attach));
  attach.target_fd = static_cast<__u32>(cg.get());
  attach.attach_bpf_fd = static_cast<__u32>(prog_fd.get());
  attach.attach_type = BPF_CGROUP_DEVICE;
  if (Bpf(BPF_PROG_ATTACH, &attach) != 0) {
    return ErrnoError(errno, "attach the device program to " + cgroup);
  }
  return OkStatus();
}

Status CreateAndDeleteBridge(const std::string& name) {
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return ErrnoError(errno, "socket");
  char buf[IFNAMSIZ] = {};
  if (name.empty() || name.size() >= sizeof(buf)) {
    return InvalidArgumentError("bridge name \"" + name + "\": 1 to 15 characters");
  }
  std::memcpy(buf, name.data(), name.size());
  if (::ioctl(s.get(), SIOCBRADDBR, buf) != 0 && errno != EEXIST) {
    return ErrnoError(errno, "create the bridge " + name);
  }
  if (::ioctl(s.get(), SIOCBRDELBR, buf) != 0) {
    return ErrnoError(errno, "delete the bridge " + name);
  }
  return OkStatus();
}

Status ConnectRefusedOnLoopback() {
  UniqueFd bound(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!bound || !client) return ErrnoError(errno, "socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(bound.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(bound.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return ErrnoError(errno, "bind a port on 127.0.0.1 (is lo up?)");
  }
  if (::connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    return InternalError("a connect to a port nobody listens on succeeded");
  }
  if (errno != ECONNREFUSED) return ErrnoError(errno, "connect on 127.0.0.1 (is lo up?)");
  return OkStatus();
}

Status HashAPacketOnLoopback() {
  unsigned lo = ::if_nametoindex("lo");
  if (lo == 0) return ErrnoError(errno, "find lo");
  UniqueFd tap(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
  if (!tap) return ErrnoError(errno, "packet socket (needs CAP_NET_RAW)");
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(ETH_P_ALL);
  ll.sll_ifindex = static_cast<int>(lo);
  if (::bind(tap.get(), reinterpret_cast<sockaddr*>(&ll), sizeof(ll)) != 0) {
    return ErrnoError(errno, "bind the packet socket to lo");
  }
  // A fanout group that spreads by flow hash: every frame lo carries is hashed to pick the
  // member (fanout_demux_hash -> __skb_get_hash_symmetric).
  int fanout = static_cast<int>((::getpid() & 0xffff) | (PACKET_FANOUT_HASH << 16));
  if (::setsockopt(tap.get(), SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout)) != 0) {
    return ErrnoError(errno, "join a PACKET_FANOUT_HASH group on lo");
  }
  UniqueFd rx(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  UniqueFd tx(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!rx || !tx) return ErrnoError(errno, "socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(rx.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(rx.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return ErrnoError(errno, "bind a UDP port on 127.0.0.1 (is lo up?)");
  }
  const char datagram[] = "fun-settle";
  if (::sendto(tx.get(), datagram, sizeof(datagram), 0, reinterpret_cast<sockaddr*>(&a),
               sizeof(a)) < 0) {
    return ErrnoError(errno, "send a UDP datagram to 127.0.0.1 (is lo up?)");
  }
  // The frame reached the tap: it went through the fanout, so it was hashed.
  pollfd p{tap.get(), POLLIN, 0};
  int n = ::poll(&p, 1, 2000);
  if (n < 0) return ErrnoError(errno, "poll the packet socket");
  if (n == 0) return InternalError("the packet socket on lo saw no frame within 2 s");
  return OkStatus();
}

SettleReport SettleKernel(const SettleOptions& o) {
  SettleReport r;
  auto offline = TakeSecondaryCpusOffline(o.cpu_dir);
  if (offline.ok()) {
    r.cpus_offlined = *offline;
  } else {
    r.errors.push_back("taking CPUs offline: " + offline.status().message() +
                       " (the keys are flipped with every CPU running)");
  }
  auto step = [&](const std::string& what, const Status& s) {
    if (s.ok()) {
      r.done.push_back(what);
    } else {
      r.errors.push_back(what + ": " + s.message());
    }
  };
  step("cgroup keys and device program held by " + o.cgroup, AttachAllowAllDeviceProgram(o.cgroup));
  if (!o.bridge.empty()) {
    step("bridge netfilter hooks (bridge " + o.bridge + ")", CreateAndDeleteBridge(o.bridge));
  }
  if (o.connect_loopback) step("TCP connect secret", ConnectRefusedOnLoopback());
  if (o.hash_loopback_packet) step("flow hash secret", HashAPacketOnLoopback());
  // The once keys are switched off by a work item queued on this CPU: let it run here.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  Status back = BringCpusOnline(o.cpu_dir, r.cpus_offlined);
  if (!back.ok()) r.errors.push_back("bringing CPUs back online: " + back.message());
  return r;
}

}  // namespace fun::guestd
