// fake_doctor_env.h: a scripted DoctorEnv for tests (tests only; not in the fun_doctor library).
//
// An in-memory file system (paths with a FileInfo and contents), plus one field per other
// answer of DoctorEnv. MakeHealthy() scripts a machine on which every check passes, so a test
// changes the one thing it is about:
//
//   FakeDoctorEnv env;
//   env.MakeHealthy(paths, "default");
//   env.total_memory = 3'000'000'000;                  // FUN0003 fails
//   env.AddFile(paths.InstanceDir("default") + "/secret", "x", 0644);   // FUN0007 fails
//   DoctorContext ctx(env, paths, "default");
//
// Access() follows the mode's owner bits when the file is the fake user's, else its "other"
// bits (no groups, no root override), unless DenyAccess says otherwise.
//
// Thread-safety: none; one test thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "lib/base/clock.h"
#include "tools/doctor/doctor_env.h"

namespace fun::doctor {

class FakeDoctorEnv final : public DoctorEnv {
 public:
  static constexpr uid_t kUid = 501;

  // The file system.
  void AddDir(const std::string& path, unsigned mode = 0700, uid_t owner = kUid);
  void AddFile(const std::string& path, std::string contents, unsigned mode = 0600,
               uid_t owner = kUid);
  void AddSocket(const std::string& path, unsigned mode = 0600, uid_t owner = kUid);
  void AddEntry(const std::string& path, FileInfo info, std::string contents = "");
  void Remove(const std::string& path);
  // Stat (and everything else on that path) fails with `error`.
  void FailPath(const std::string& path, Status error);
  // Access(path, mode) fails with PermissionDenied.
  void DenyAccess(const std::string& path);

  // Scripts a Linux x86_64 host with KVM, 16 GB RAM, 100 GB free, QEMU in $PATH, an image, and
  // the instance running with containerd answering: every check passes.
  void MakeHealthy(const Paths& paths, const std::string& instance);

  // DoctorEnv:
  StatusOr<FileInfo> Stat(const std::string& path) override;
  Status Access(const std::string& path, int mode) override;
  StatusOr<std::string> ReadFileTail(const std::string& path, size_t max_bytes) override;
  StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  StatusOr<uint64_t> FreeDiskBytes(const std::string& path) override;
  StatusOr<uint64_t> TotalMemoryBytes() override;
  HostOs GetHostOs() override { return host; }
  uid_t Uid() override { return uid; }
  StatusOr<std::string> FindProgram(const std::string& name) override;
  StatusOr<ProcessResult> RunCommand(const Command& command) override;
  std::string ExecutableDir() override { return exe_dir; }
  vm::HostFacts ProbeHostFacts() override { return facts; }
  std::vector<std::string> ImageSearchPath(const Paths&) override { return image_search_path; }
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
  Clock& clock() override { return sim_clock; }
  // A file's contents as the fake holds them ("" when absent).
  std::string Contents(const std::string& path) const;

  // The script (public on purpose: tests set what they need).
  uid_t uid = kUid;
  HostOs host;
  std::optional<uint64_t> total_memory = 16'000'000'000ULL;  // nullopt: the read fails
  uint64_t free_disk = 100'000'000'000ULL;
  std::map<std::string, std::string> programs;           // FindProgram: name -> path
  std::map<std::string, Status> program_errors;          // FindProgram: name -> error
  std::map<std::string, ProcessResult> command_results;  // RunCommand: program -> result
  std::map<std::string, Status> command_errors;          // RunCommand: program -> start error
  std::string exe_dir = "/opt/fun/bin";
  vm::HostFacts facts;
  std::vector<std::string> image_search_path;
  // GetInstanceStatus: the status of the named instance ("exists" false when unset); its
  // paths are filled in from Paths.
  std::map<std::string, vm::InstanceStatus> instances;
  std::optional<cri::RuntimeVersion> cri_version;  // nullopt: cri_error
  Status cri_error = UnavailableError("connection refused");
  std::chrono::milliseconds cri_latency{12};
  // TcpConnect: "IP:PORT" -> error (OK when absent); each call takes tcp_latency, or its whole
  // timeout when the error is DeadlineExceeded.
  std::map<std::string, Status> tcp_errors;
  std::chrono::milliseconds tcp_latency{1};
  // ProbeVmOutbound: the VM dials 10.0.2.2:40000 unless outbound_error is set; it takes
  // outbound_latency, or the whole timeout when the error is DeadlineExceeded.
  Status outbound_error;
  std::chrono::milliseconds outbound_latency{4};
  // ExchangeVmDns: dns_answer turns the query into the answer's bytes (MakeHealthy: NOERROR
  // with two A records, see FakeDnsAnswer); it fails with dns_error when that is set. A call
  // takes dns_latency, or every attempt's timeout when the error is DeadlineExceeded, and
  // reports dns_sends sends.
  std::function<std::string(std::string_view query)> dns_answer;
  Status dns_error;
  std::chrono::milliseconds dns_latency{3};
  int dns_sends = 1;
  // PingGuest: the guest's answer (MakeHealthy: containerd up, the config's share mounted and
  // answering); ping_error when that is set.
  agent::AgentPing ping;
  Status ping_error;
  // CriStatus: the runtime's conditions (MakeHealthy: both ready); cri_status_error when set.
  cri::RuntimeStatus cri_status;
  Status cri_status_error;
  // StepGuestClock: moves ping.guest_time_unix_ns by the step unless sync_error is set; each
  // call is counted.
  Status sync_error;
  int sync_calls = 0;
  // Chmod / RemoveFile / WriteFile fail with this when set (the fake file system is unchanged).
  Status write_error;
  // StopInstance: each call ("name force|graceful"); it leaves the instance stopped (no live
  // pids, phase "stopped") unless stop_error is set.
  std::vector<std::string> stops;
  Status stop_error;
  // RequestPortTable: hostd's answer; nullopt: no hostd answers (Unavailable), so the checks
  // read ports.json from the script's files.
  std::optional<std::vector<vm::PublishState>> hostd_port_table;
  SimulatedClock sim_clock;

  // What was asked.
  std::vector<Command> commands_run;
  std::vector<std::pair<std::string, std::chrono::milliseconds>> cri_calls;
  std::vector<std::pair<std::string, std::chrono::milliseconds>> tcp_connects;    // "IP:PORT"
  std::vector<std::pair<std::string, std::chrono::milliseconds>> outbound_calls;  // instance dir
  struct DnsCall {
    std::string instance_dir;
    std::string server;
    std::string query;
    int attempts = 0;
    std::chrono::milliseconds attempt_timeout{0};
  };
  std::vector<DnsCall> dns_calls;

 private:
  struct Entry {
    FileInfo info;
    std::string contents;
  };
  std::map<std::string, Entry> files_;
  std::map<std::string, Status> failures_;
  std::map<std::string, bool> denied_;
  std::set<std::string> removed_;  // by RemoveFile
};

// A DNS answer to `query` (a message from dns::BuildQuery) built by hand: the query's header
// and question with QR, RA and `rcode` set, then one A record per address (owner: a pointer to
// the question's name, TTL 60) and `flags` or'ed into the header's flags (0x0200: TC).
std::string FakeDnsAnswer(std::string_view query, uint8_t rcode,
                          const std::vector<std::array<uint8_t, 4>>& addresses, uint16_t flags = 0);

}  // namespace fun::doctor
