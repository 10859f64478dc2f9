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
//
// Errors are Status values with the errno's canonical code (NotFound for a missing file,
// PermissionDenied for EACCES), so a check can tell "absent" from "unreadable".
//
// Thread-safety: RealDoctorEnv is safe to use from several threads (it holds no state); the
// doctor itself uses one thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "lib/base/clock.h"
#include "lib/base/paths.h"
#include "lib/base/process.h"
#include "lib/base/status.h"
#include "lib/cri/client.h"
#include "lib/vm/accel.h"
#include "lib/vm/instance.h"

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

  // For timing the CRI call (a simulated clock in tests).
  virtual Clock& clock() = 0;
};

// The machine itself.
class RealDoctorEnv final : public DoctorEnv {
 public:
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
  Clock& clock() override { return Clock::Real(); }
};

// Parses /proc/meminfo text: MemTotal in bytes. InvalidArgument when the line is missing or
// malformed. Pure (the Linux RealDoctorEnv uses it; tests feed it text).
StatusOr<uint64_t> ParseMemTotal(std::string_view meminfo);

}  // namespace fun::doctor
