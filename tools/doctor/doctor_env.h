// doctor_env.h: everything fun-doctor learns about the machine, behind one interface.
//
// The checks (checks.h) never touch a file, a process, a socket or the clock directly: they
// ask a DoctorEnv. RealDoctorEnv asks the machine (the file system, /proc or sysctl, lib/vm's
// instance status and accelerator probe, containerd's CRI socket); FakeDoctorEnv
// (fake_doctor_env.h, tests only) answers from a script, so every check's pass and fail paths,
// the macOS ones included, are tested on Linux. It is leveldb's Env, sized for one tool.
//
//   RealDoctorEnv env;
//   StatusOr<FileInfo> dir = env.Stat(paths.InstanceDir("default"));
//   if (dir.ok() && (dir->mode & 077) != 0) ...  // readable by others
//   StatusOr<cri::RuntimeVersion> v =
//       env.CriVersion(paths.InstanceFile("default", InstanceFileKind::kContainerdSock),
//                      std::chrono::seconds(1));
//   Status s = env.TcpConnect("127.0.0.1", 8080, std::chrono::milliseconds(300));
//   StatusOr<VmOutbound> o = env.ProbeVmOutbound(paths.InstanceDir("default"), "default",
//                                                std::chrono::seconds(1));
//   StatusOr<VmDnsExchange> x = env.ExchangeVmDns(paths.InstanceDir("default"), "default",
//                                                 "10.0.2.3:53", query, 2, 1s);
//
// Errors are Status values with the errno's canonical code (NotFound for a missing file,
// PermissionDenied for EACCES), so a check can tell "absent" from "unreadable".
//
// Thread-safety: RealDoctorEnv is safe to use from several threads (its one field is const); the
// doctor itself uses one thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/clock.h"
#include "lib/base/paths.h"
#include "lib/base/process.h"
#include "lib/base/status.h"
#include "lib/cri/client.h"
#include "lib/net/agent_client.h"
#include "lib/vm/accel.h"
#include "lib/vm/instance.h"
#include "lib/vm/port_publisher.h"

namespace fun::doctor {

enum class FileType { kRegular, kDirectory, kSocket, kSymlink, kOther };
std::string_view FileTypeName(FileType type);

// What lstat says about a path (symlinks are not followed: a symlinked instance dir is
// reported as one).
struct FileInfo {
  FileType type = FileType::kRegular;
  unsigned mode = 0;  // permission bits only (st_mode & 07777)
  uid_t owner = 0;
  uint64_t size = 0;
};

// What ProbeVmOutbound proved: the VM's agent dialed `target` and the connection arrived at
// the host's `listener`, carrying bytes both ways.
struct VmOutbound {
  std::string target;    // as the VM dialed it: "10.0.2.2:41234"
  std::string listener;  // where the host listened: "127.0.0.1:41234"
};

// What ExchangeVmDns brought back from a nameserver, asked from inside the VM.
struct VmDnsExchange {
  std::string server;    // as the VM sent to it: "10.0.2.3:53"
  std::string response;  // the first datagram back with the query's id: DNS bytes, untrusted
  int sends = 1;         // how often the query went out (2: the first one got no answer in time)
};

// The host's operating system as people name it.
struct HostOs {
  Os os = Os::kLinux;
  std::string version;  // macOS: "14.2.1" (kern.osproductversion); Linux: the kernel release
  std::string arch;     // uname -m: "x86_64", "arm64", "aarch64"
};

class DoctorEnv {
 public:
  virtual ~DoctorEnv() = default;

  // lstat(2). NotFound when the path does not exist.
  virtual StatusOr<FileInfo> Stat(const std::string& path) = 0;
  // access(2) with R_OK / W_OK / X_OK: OK or the errno as a Status.
  virtual Status Access(const std::string& path, int mode) = 0;
  // At most the last `max_bytes` bytes of a file (a long console log is read from its end).
  virtual StatusOr<std::string> ReadFileTail(const std::string& path, size_t max_bytes) = 0;
  // The names in a directory, sorted, without "." and "..".
  virtual StatusOr<std::vector<std::string>> ListDir(const std::string& path) = 0;
  // The bytes an unprivileged user may still write on the file system holding `path`
  // (statvfs f_bavail * f_frsize). `path` must exist.
  virtual StatusOr<uint64_t> FreeDiskBytes(const std::string& path) = 0;
  // Physical memory (Linux: MemTotal of /proc/meminfo; macOS: sysctl hw.memsize).
  virtual StatusOr<uint64_t> TotalMemoryBytes() = 0;
  virtual HostOs GetHostOs() = 0;
  virtual uid_t Uid() = 0;

  // A program found in $PATH as execvp would (see fun::FindProgram): NotFound / PermissionDenied.
  virtual StatusOr<std::string> FindProgram(const std::string& name) = 0;
  // Runs a short command to completion (its Command::timeout is honoured).
  virtual StatusOr<ProcessResult> RunCommand(const Command& command) = 0;
  // The directory of the running program (tools are installed side by side).
  virtual std::string ExecutableDir() = 0;

  // What lib/vm sees: the accelerator facts (vm::ProbeHostFacts), the image search path
  // (vm::ImageSearchPath, without an explicit dir) and the instance's status
  // (vm::GetInstanceStatus: pid files with start times, state.json, config.json).
  virtual vm::HostFacts ProbeHostFacts() = 0;
  virtual std::vector<std::string> ImageSearchPath(const Paths& paths) = 0;
  virtual vm::InstanceStatus GetInstanceStatus(const Paths& paths, const std::string& name) = 0;

  // CRI RuntimeService.Version through the unix socket, with `deadline` for connecting and
  // answering together.
  virtual StatusOr<cri::RuntimeVersion> CriVersion(const std::string& socket,
                                                   std::chrono::milliseconds deadline) = 0;

  // A TCP connection to `ip`:`port` (an IPv4 or IPv6 literal), closed as soon as it is
  // established. Unavailable when refused, DeadlineExceeded when nothing answers within
  // `timeout`, other errno codes as they come.
  virtual Status TcpConnect(const std::string& ip, uint16_t port,
                            std::chrono::milliseconds timeout) = 0;

  // The VM's outbound path to the host: opens a listener on the host's 127.0.0.1 (a free
  // port), asks the instance's guest agent (vm::InstanceAgentEndpoint) to dial it as the VM
  // sees the host (kTcp "10.0.2.2:PORT" under QEMU user-mode networking), waits for the
  // connection and exchanges a few bytes both ways; all within `timeout`. Errors say which
  // step failed (no agent port recorded, the agent's dial, no connection arriving, the bytes).
  virtual StatusOr<VmOutbound> ProbeVmOutbound(const std::string& instance_dir,
                                               const std::string& name,
                                               std::chrono::milliseconds timeout) = 0;

  // Name resolution from inside the VM: opens a kUdp channel through the instance's guest agent
  // to `server` ("IP:PORT" as the VM reaches it), sends `query` (a DNS message, lib/net/dns.h)
  // as one datagram and returns the first datagram that comes back with the query's id (its
  // first two bytes; others are ignored, as resolvers do). Without an answer after
  // `attempt_timeout` it sends the query again, `attempts` sends in all; the agent's dial counts
  // against the first. DeadlineExceeded when no answer came; other errors say which step failed
  // (no agent port recorded, the agent's UDP channel, the channel closing).
  virtual StatusOr<VmDnsExchange> ExchangeVmDns(const std::string& instance_dir,
                                                const std::string& name, const std::string& server,
                                                std::string_view query, int attempts,
                                                std::chrono::milliseconds attempt_timeout) = 0;

  // The guest agent's ping (agent kind kPing through vm::InstanceAgentEndpoint), within
  // `timeout`: what fun-guestd says about containerd and each share (mounted, answering a
  // statfs). Errors say which step failed (no agent port recorded, the agent's answer).
  virtual StatusOr<agent::AgentPing> PingGuest(const std::string& instance_dir,
                                               const std::string& name,
                                               std::chrono::milliseconds timeout) = 0;

  // fun-hostd's table of published ports, fresh: asks <instance_dir>/hostd.sock for a publish
  // round and returns its answer (vm::RequestPublish), within `timeout`. Unavailable when no
  // hostd answers there (the checks then read ports.json).
  virtual StatusOr<std::vector<vm::PublishState>> RequestPortTable(
      const std::string& instance_dir, std::chrono::milliseconds timeout) = 0;

  // CRI Status through the socket, within `deadline`: the runtime's conditions.
  virtual StatusOr<cri::RuntimeStatus> CriStatus(const std::string& socket,
                                                 std::chrono::milliseconds deadline) = 0;

  // Steps the guest's clock by `delta_ns` (agent kind kTimeSync), within `timeout`; the
  // guest's answer ("clock stepped by ...") on success.
  virtual StatusOr<std::string> StepGuestClock(const std::string& instance_dir,
                                               const std::string& name, int64_t delta_ns,
                                               std::chrono::milliseconds timeout) = 0;

  // Stops the instance (vm::StopInstance; with `force` the graceful steps are skipped).
  virtual Status StopInstance(const Paths& paths, const std::string& name, bool force) = 0;

  // What `--fix` and `bundle` change on the machine: nothing else writes.
  virtual Status Chmod(const std::string& path, unsigned mode) = 0;
  // Removes a file or socket (not a directory).
  virtual Status RemoveFile(const std::string& path) = 0;
  // Creates or replaces `path` with `contents`, mode `mode` (then exactly that mode).
  virtual Status WriteFile(const std::string& path, std::string_view contents, unsigned mode) = 0;

  // For timing the CRI call (a simulated clock in tests).
  virtual Clock& clock() = 0;
};

// How the VM reaches the host's loopback under QEMU user-mode networking.
inline constexpr std::string_view kDefaultHostAlias = "10.0.2.2";
// The VM's nameserver: QEMU user-mode networking's DNS, which relays to the host's resolver;
// guest/init writes it to the VM's /etc/resolv.conf (its fun.dns= default). The one place the
// host side names it.
inline constexpr std::string_view kDefaultVmNameserver = "10.0.2.3:53";

// The machine itself.
class RealDoctorEnv final : public DoctorEnv {
 public:
  // `host_alias`: the address the VM dials to reach the host's 127.0.0.1 in ProbeVmOutbound
  // (tests running fun-guestd on the host itself pass "127.0.0.1").
  explicit RealDoctorEnv(std::string host_alias = std::string(kDefaultHostAlias))
      : host_alias_(std::move(host_alias)) {}

  StatusOr<FileInfo> Stat(const std::string& path) override;
  Status Access(const std::string& path, int mode) override;
  StatusOr<std::string> ReadFileTail(const std::string& path, size_t max_bytes) override;
  StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  StatusOr<uint64_t> FreeDiskBytes(const std::string& path) override;
  StatusOr<uint64_t> TotalMemoryBytes() override;  // host_info_{linux,darwin}.cc
  HostOs GetHostOs() override;                     // host_info_{linux,darwin}.cc
  uid_t Uid() override;
  StatusOr<std::string> FindProgram(const std::string& name) override;
  StatusOr<ProcessResult> RunCommand(const Command& command) override;
  std::string ExecutableDir() override;
  vm::HostFacts ProbeHostFacts() override;
  std::vector<std::string> ImageSearchPath(const Paths& paths) override;
  vm::InstanceStatus GetInstanceStatus(const Paths& paths, const std::string& name) override;
  StatusOr<cri::RuntimeVersion> CriVersion(const std::string& socket,
                                           std::chrono::milliseconds deadline) override;
  Status TcpConnect(const std::string& ip, uint16_t port,
                    std::chrono::milliseconds timeout) override;
  StatusOr<VmOutbound> ProbeVmOutbound(const std::string& instance_dir, const std::string& name,
                                       std::chrono::milliseconds timeout) override;
  StatusOr<VmDnsExchange> ExchangeVmDns(const std::string& instance_dir, const std::string& name,
                                        const std::string& server, std::string_view query,
                                        int attempts,
                                        std::chrono::milliseconds attempt_timeout) override;
  StatusOr<agent::AgentPing> PingGuest(const std::string& instance_dir, const std::string& name,
                                       std::chrono::milliseconds timeout) override;
  StatusOr<std::vector<vm::PublishState>> RequestPortTable(
      const std::string& instance_dir, std::chrono::milliseconds timeout) override;
  StatusOr<cri::RuntimeStatus> CriStatus(const std::string& socket,
                                         std::chrono::milliseconds deadline) override;
  StatusOr<std::string> StepGuestClock(const std::string& instance_dir, const std::string& name,
                                       int64_t delta_ns,
                                       std::chrono::milliseconds timeout) override;
  Status StopInstance(const Paths& paths, const std::string& name, bool force) override;
  Status Chmod(const std::string& path, unsigned mode) override;
  Status RemoveFile(const std::string& path) override;
  Status WriteFile(const std::string& path, std::string_view contents, unsigned mode) override;
  Clock& clock() override { return Clock::Real(); }

 private:
  const std::string host_alias_;
};

// Parses /proc/meminfo text: MemTotal in bytes. InvalidArgument when the line is missing or
// malformed. Pure (the Linux RealDoctorEnv uses it; tests feed it text).
StatusOr<uint64_t> ParseMemTotal(std::string_view meminfo);

}  // namespace fun::doctor
