#include "tools/doctor/fake_doctor_env.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

namespace fun::doctor {

void FakeDoctorEnv::AddDir(const std::string& path, unsigned mode, uid_t owner) {
  AddEntry(path, {.type = FileType::kDirectory, .mode = mode, .owner = owner, .size = 4096});
}

void FakeDoctorEnv::AddFile(const std::string& path, std::string contents, unsigned mode,
                            uid_t owner) {
  uint64_t size = contents.size();
  AddEntry(path, {.type = FileType::kRegular, .mode = mode, .owner = owner, .size = size},
           std::move(contents));
}

void FakeDoctorEnv::AddSocket(const std::string& path, unsigned mode, uid_t owner) {
  AddEntry(path, {.type = FileType::kSocket, .mode = mode, .owner = owner, .size = 0});
}

void FakeDoctorEnv::AddEntry(const std::string& path, FileInfo info, std::string contents) {
  files_[path] = Entry{info, std::move(contents)};
}

void FakeDoctorEnv::Remove(const std::string& path) { files_.erase(path); }

void FakeDoctorEnv::FailPath(const std::string& path, Status error) {
  failures_[path] = std::move(error);
}

void FakeDoctorEnv::DenyAccess(const std::string& path) { denied_[path] = true; }

void FakeDoctorEnv::MakeHealthy(const Paths& paths, const std::string& name) {
  host = {.os = paths.os, .version = "6.1.0-18-amd64", .arch = "x86_64"};
  facts = vm::HostFacts{.os = paths.os,
                        .arch = "x86_64",
                        .dev_kvm_exists = true,
                        .dev_kvm_usable = true,
                        .kvm_standard = true};
  programs["qemu-system-x86_64"] = "/usr/bin/qemu-system-x86_64";
  command_results["/usr/bin/qemu-system-x86_64"] = ProcessResult::Exited(
      0, "QEMU emulator version 7.2.9 (Debian 1:7.2+dfsg-7+deb12u6)\nCopyright (c) 2003-2022\n");

  // /dev/kvm, read-write for the user (FUN0021 with KVM).
  AddFile("/dev/kvm", "", 0666, 0);
  AddDir(paths.state_dir);
  AddDir(paths.instances_dir);
  std::string image = paths.ImageDir("0.1.0");
  image_search_path = {image, exe_dir + "/../linuxkit"};
  AddDir(image, 0755);
  AddFile(image + "/fun-kernel", std::string(4096, 'k'), 0644);
  AddFile(image + "/fun-initrd.img", std::string(8192, 'i'), 0644);
  AddFile(image + "/fun-cmdline", "console=ttyS0 quiet\n", 0644);

  std::string dir = paths.InstanceDir(name);
  AddDir(dir, 0700);
  AddFile(dir + "/secret", std::string(32, 's'), 0600);
  AddFile(paths.InstanceFile(name, InstanceFileKind::kConfig), "{}\n", 0600);
  AddSocket(paths.InstanceFile(name, InstanceFileKind::kContainerdSock), 0600);
  AddSocket(dir + "/qmp.sock", 0600);
  AddFile(paths.InstanceFile(name, InstanceFileKind::kConsoleLog),
          "[    0.000000] Linux version 6.1.0\n"
          "fun-init: data disk: existing ext4 (/dev/vda on /var/lib/containerd)\n"
          "fun-init: containerd ready after 1.84 s\n",
          0600);
  AddFile(paths.InstanceFile(name, InstanceFileKind::kHostdLog), "I hostd started\n", 0600);
  if (paths.ConsoleLogForUser(name) != paths.InstanceFile(name, InstanceFileKind::kConsoleLog)) {
    AddDir(paths.logs_dir, 0700);
    AddFile(paths.ConsoleLogForUser(name), "console copy\n", 0600);
  }

  vm::InstanceStatus st;
  st.name = name;
  st.exists = true;
  st.config = InstanceConfig{
      .name = name,
      .shares = {{.host_path = "/Users/me", .guest_path = "/Users/me", .tag = "users-me"}}};
  st.hostd = {.status = vm::PidStatus::kAlive, .pid = 4242, .start_time = 100};
  st.vm = {.status = vm::PidStatus::kAlive, .pid = 4243, .start_time = 101};
  st.state = vm::InstanceState{.phase = vm::Phase::kRunning,
                               .backend = "qemu",
                               .accel = "kvm",
                               .accel_reason = "KVM is available",
                               .started_at_ms = 1000,
                               .ready_at_ms = 3000};
  st.phase = "running";
  st.uptime_s = 754;
  instances[name] = st;
  cri_version = cri::RuntimeVersion{.version = "0.1.0",
                                    .runtime_name = "containerd",
                                    .runtime_version = "1.6.20~ds1",
                                    .runtime_api_version = "v1"};
  ping = agent::AgentPing{.containerd_ready = true, .uptime_s = 754, .version = "0.1.0"};
  // The guest's clock in step with the host's, its data disk 20 GiB with 15 GiB free.
  ping.host_sent_unix_ns = 1'767'225'600'000'000'000;
  ping.guest_time_unix_ns = ping.host_sent_unix_ns + 1'000'000;
  ping.host_received_unix_ns = ping.host_sent_unix_ns + 2'000'000;
  ping.data_disk = agent::GuestDiskState{
      .path = "/var/lib/containerd", .total_bytes = 20ULL << 30, .avail_bytes = 15ULL << 30};
  cri_status = cri::RuntimeStatus{.runtime_ready = true,
                                  .network_ready = true,
                                  .conditions = {{.type = "RuntimeReady", .status = true},
                                                 {.type = "NetworkReady", .status = true}}};
  ping.shares = {{.tag = "users-me", .path = "/Users/me", .status = "mounted", .answering = true}};
  dns_answer = [](std::string_view query) {
    return FakeDnsAnswer(query, 0, {{151, 101, 2, 132}, {151, 101, 66, 132}});
  };
}

StatusOr<FileInfo> FakeDoctorEnv::Stat(const std::string& path) {
  if (auto f = failures_.find(path); f != failures_.end()) return f->second;
  auto it = files_.find(path);
  if (it == files_.end()) return ErrnoError(ENOENT, path);
  return it->second.info;
}

Status FakeDoctorEnv::Access(const std::string& path, int mode) {
  FUN_ASSIGN_OR_RETURN(FileInfo info, Stat(path));
  if (denied_.count(path) != 0) return ErrnoError(EACCES, path);
  unsigned bits = info.owner == uid ? (info.mode >> 6) & 7 : info.mode & 7;
  unsigned want = ((mode & R_OK) != 0 ? 4u : 0u) | ((mode & W_OK) != 0 ? 2u : 0u) |
                  ((mode & X_OK) != 0 ? 1u : 0u);
  if ((bits & want) != want) return ErrnoError(EACCES, path);
  return OkStatus();
}

StatusOr<std::string> FakeDoctorEnv::ReadFileTail(const std::string& path, size_t max_bytes) {
  FUN_RETURN_IF_ERROR(Access(path, R_OK));
  const std::string& c = files_.at(path).contents;
  return c.size() > max_bytes ? c.substr(c.size() - max_bytes) : c;
}

StatusOr<std::vector<std::string>> FakeDoctorEnv::ListDir(const std::string& path) {
  FUN_ASSIGN_OR_RETURN(FileInfo info, Stat(path));
  if (info.type != FileType::kDirectory) return ErrnoError(ENOTDIR, path);
  std::vector<std::string> names;
  std::string prefix = path + "/";
  for (const auto& [p, e] : files_) {
    if (p.size() > prefix.size() && p.compare(0, prefix.size(), prefix) == 0 &&
        p.find('/', prefix.size()) == std::string::npos) {
      names.push_back(p.substr(prefix.size()));
    }
  }
  return names;
}

StatusOr<uint64_t> FakeDoctorEnv::FreeDiskBytes(const std::string& path) {
  FUN_RETURN_IF_ERROR(Stat(path).status());
  return free_disk;
}

StatusOr<uint64_t> FakeDoctorEnv::TotalMemoryBytes() {
  if (!total_memory) return InvalidArgumentError("no MemTotal line in /proc/meminfo");
  return *total_memory;
}

StatusOr<std::string> FakeDoctorEnv::FindProgram(const std::string& name) {
  if (auto e = program_errors.find(name); e != program_errors.end()) return e->second;
  if (auto p = programs.find(name); p != programs.end()) return p->second;
  return NotFoundError(fmt::format("{} is not in PATH", name));
}

StatusOr<ProcessResult> FakeDoctorEnv::RunCommand(const Command& command) {
  commands_run.push_back(command);
  if (auto e = command_errors.find(command.program); e != command_errors.end()) return e->second;
  if (auto r = command_results.find(command.program); r != command_results.end()) {
    return r->second;
  }
  return NotFoundError("starting " + command.program + ": no fake result");
}

vm::InstanceStatus FakeDoctorEnv::GetInstanceStatus(const Paths& paths, const std::string& name) {
  vm::InstanceStatus st;
  if (auto it = instances.find(name); it != instances.end()) st = it->second;
  st.name = name;
  st.instance_dir = paths.InstanceDir(name);
  st.containerd_socket = paths.InstanceFile(name, InstanceFileKind::kContainerdSock);
  st.console_log = paths.InstanceFile(name, InstanceFileKind::kConsoleLog);
  st.hostd_log = paths.InstanceFile(name, InstanceFileKind::kHostdLog);
  if (!st.exists && st.phase.empty()) st.phase = "absent";
  // A stale or corrupt pid file that a repair removed reads as missing, as it would for real.
  for (auto [kind, pid] : {std::pair{InstanceFileKind::kHostdPid, &st.hostd},
                           std::pair{InstanceFileKind::kVmPid, &st.vm}}) {
    bool gone = removed_.count(paths.InstanceFile(name, kind)) != 0;
    if (gone && pid->status != vm::PidStatus::kAlive) *pid = {};
  }
  return st;
}

StatusOr<cri::RuntimeVersion> FakeDoctorEnv::CriVersion(const std::string& socket,
                                                        std::chrono::milliseconds deadline) {
  cri_calls.emplace_back(socket, deadline);
  sim_clock.Advance(std::min(cri_latency, deadline));
  if (!cri_version) return cri_error;
  return *cri_version;
}

Status FakeDoctorEnv::TcpConnect(const std::string& ip, uint16_t port,
                                 std::chrono::milliseconds timeout) {
  std::string key = ip.find(':') != std::string::npos ? fmt::format("[{}]:{}", ip, port)
                                                      : fmt::format("{}:{}", ip, port);
  tcp_connects.emplace_back(key, timeout);
  Status s;
  if (auto e = tcp_errors.find(key); e != tcp_errors.end()) s = e->second;
  sim_clock.Advance(s.code() == Code::kDeadlineExceeded ? timeout : std::min(tcp_latency, timeout));
  return s;
}

StatusOr<VmOutbound> FakeDoctorEnv::ProbeVmOutbound(const std::string& instance_dir,
                                                    const std::string& /*name*/,
                                                    std::chrono::milliseconds timeout) {
  outbound_calls.emplace_back(instance_dir, timeout);
  sim_clock.Advance(outbound_error.code() == Code::kDeadlineExceeded
                        ? timeout
                        : std::min(outbound_latency, timeout));
  if (!outbound_error.ok()) return outbound_error;
  return VmOutbound{.target = "10.0.2.2:40000", .listener = "127.0.0.1:40000"};
}

StatusOr<VmDnsExchange> FakeDoctorEnv::ExchangeVmDns(const std::string& instance_dir,
                                                     const std::string& /*name*/,
                                                     const std::string& server,
                                                     std::string_view query, int attempts,
                                                     std::chrono::milliseconds attempt_timeout) {
  dns_calls.push_back({.instance_dir = instance_dir,
                       .server = server,
                       .query = std::string(query),
                       .attempts = attempts,
                       .attempt_timeout = attempt_timeout});
  sim_clock.Advance(dns_error.code() == Code::kDeadlineExceeded ? attempts * attempt_timeout
                                                                : dns_latency);
  if (!dns_error.ok()) return dns_error;
  if (!dns_answer) return DeadlineExceededError("no dns_answer scripted");
  return VmDnsExchange{.server = server, .response = dns_answer(query), .sends = dns_sends};
}

StatusOr<agent::AgentPing> FakeDoctorEnv::PingGuest(const std::string& /*instance_dir*/,
                                                    const std::string& /*name*/,
                                                    std::chrono::milliseconds /*timeout*/) {
  sim_clock.Advance(std::chrono::milliseconds(2));
  if (!ping_error.ok()) return ping_error;
  return ping;
}

StatusOr<std::vector<vm::PublishState>> FakeDoctorEnv::RequestPortTable(
    const std::string& instance_dir, std::chrono::milliseconds /*timeout*/) {
  if (!hostd_port_table) {
    return UnavailableError(
        fmt::format("fun-hostd does not answer on {}/hostd.sock", instance_dir));
  }
  return *hostd_port_table;
}

StatusOr<cri::RuntimeStatus> FakeDoctorEnv::CriStatus(const std::string& /*socket*/,
                                                      std::chrono::milliseconds /*deadline*/) {
  sim_clock.Advance(std::chrono::milliseconds(3));
  if (!cri_status_error.ok()) return cri_status_error;
  return cri_status;
}

StatusOr<std::string> FakeDoctorEnv::StepGuestClock(const std::string& /*instance_dir*/,
                                                    const std::string& /*name*/, int64_t delta_ns,
                                                    std::chrono::milliseconds /*timeout*/) {
  sync_calls++;
  if (!sync_error.ok()) return sync_error;
  ping.guest_time_unix_ns += delta_ns;
  return fmt::format("clock stepped by {} ns", delta_ns);
}

Status FakeDoctorEnv::StopInstance(const Paths& /*paths*/, const std::string& name, bool force) {
  stops.push_back(name + (force ? " force" : " graceful"));
  if (!stop_error.ok()) return stop_error;
  vm::InstanceStatus& st = instances[name];
  st.hostd = {};
  st.vm = {};
  st.phase = "stopped";
  if (st.state) st.state->phase = vm::Phase::kStopped;
  return OkStatus();
}

Status FakeDoctorEnv::Chmod(const std::string& path, unsigned mode) {
  if (!write_error.ok()) return write_error;
  auto it = files_.find(path);
  if (it == files_.end()) return ErrnoError(ENOENT, "chmod " + path);
  it->second.info.mode = mode;
  return OkStatus();
}

Status FakeDoctorEnv::RemoveFile(const std::string& path) {
  if (!write_error.ok()) return write_error;
  auto it = files_.find(path);
  if (it == files_.end()) return ErrnoError(ENOENT, "removing " + path);
  if (it->second.info.type == FileType::kDirectory) return ErrnoError(EISDIR, "removing " + path);
  files_.erase(it);
  removed_.insert(path);
  return OkStatus();
}

Status FakeDoctorEnv::WriteFile(const std::string& path, std::string_view contents, unsigned mode) {
  if (!write_error.ok()) return write_error;
  AddFile(path, std::string(contents), mode);
  return OkStatus();
}

std::string FakeDoctorEnv::Contents(const std::string& path) const {
  auto it = files_.find(path);
  return it == files_.end() ? std::string() : it->second.contents;
}

std::string FakeDnsAnswer(std::string_view query, uint8_t rcode,
                          const std::vector<std::array<uint8_t, 4>>& addresses, uint16_t flags) {
  std::string a(query);
  if (a.size() < 12) return a;
  auto put16 = [&](size_t at, uint16_t v) {
    a[at] = static_cast<char>(v >> 8);
    a[at + 1] = static_cast<char>(v & 0xff);
  };
  // QR, the query's opcode and RD, RA, the rcode; ANCOUNT; no authority or additional records.
  uint16_t qflags = static_cast<uint16_t>(static_cast<uint8_t>(a[2]) << 8);
  put16(2, static_cast<uint16_t>(0x8000 | (qflags & 0x7900) | 0x0080 | flags | (rcode & 0xF)));
  put16(6, static_cast<uint16_t>(addresses.size()));
  put16(8, 0);
  put16(10, 0);
  for (const auto& ip : addresses) {
    // Owner: a pointer to the question's name (byte 12); type A, class IN, TTL 60, 4 bytes.
    a += std::string{'\xc0', '\x0c', 0, 1, 0, 1, 0, 0, 0, 60, 0, 4};
    for (uint8_t b : ip) a.push_back(static_cast<char>(b));
  }
  return a;
}

}  // namespace fun::doctor
