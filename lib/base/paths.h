// paths.h: where Fun keeps its state and logs, per platform.
//
//   macOS: state ~/Library/Application Support/Fun, logs ~/Library/Logs/Fun
//   Linux: state ${XDG_STATE_HOME:-~/.local/state}/fun, logs <state>/logs
//   FUN_HOME set (any platform): state $FUN_HOME, logs $FUN_HOME/logs
//
// Inside the state dir (shared/ARCHITECTURE.md, "State on disk"):
//   instances/<name>/{config.json, hostd.pid, vm.pid, console.log, hostd.log, containerd.sock,
//                     data.img}
//   images/<version>/{fun-kernel, fun-initrd.img, fun-cmdline}
//
// The platform logic is a pure function of PathsInput, so both platforms are tested on Linux:
//
//   auto paths = fun::ResolvePaths(fun::PathsInputFromEnvironment());
//   if (!paths.ok()) return paths.status();
//   std::string sock = paths->InstanceFile("default", fun::InstanceFileKind::kContainerdSock);
//
// Thread-safety: values. PathsInputFromEnvironment reads the environment (not thread-safe
// against setenv).
#pragma once

#include <string>
#include <string_view>

#include "lib/base/status.h"

namespace fun {

enum class Os { kLinux, kMacos };
Os CurrentOs();
std::string_view OsName(Os os);

struct PathsInput {
  Os os = Os::kLinux;
  std::string home;            // $HOME, or the passwd entry's home
  std::string fun_home;        // $FUN_HOME ("" when unset)
  std::string xdg_state_home;  // $XDG_STATE_HOME ("" when unset)
};

// Reads $HOME (falling back to the passwd entry), $FUN_HOME and $XDG_STATE_HOME.
PathsInput PathsInputFromEnvironment();

enum class InstanceFileKind {
  kConfig,          // config.json
  kHostdPid,        // hostd.pid
  kVmPid,           // vm.pid
  kConsoleLog,      // console.log
  kHostdLog,        // hostd.log
  kContainerdSock,  // containerd.sock
  kDataImage,       // data.img
  kHostdSock,       // hostd.sock: ask fun-hostd to publish ports now, get the table back
  kPortsJson,       // ports.json: the host ports fun-hostd publishes, and why any is not
};
std::string_view InstanceFileName(InstanceFileKind kind);

struct Paths {
  Os os = Os::kLinux;
  std::string home;           // the user's home directory
  std::string state_dir;      // everything Fun keeps
  std::string logs_dir;       // logs that outlive an instance (macOS: ~/Library/Logs/Fun)
  std::string instances_dir;  // <state>/instances
  std::string images_dir;     // <state>/images

  std::string InstanceDir(std::string_view name) const;
  std::string InstanceFile(std::string_view name, InstanceFileKind kind) const;
  std::string ImageDir(std::string_view version) const;
  // The console log path people are told to look at. On macOS the product promise is
  // ~/Library/Logs/Fun/linuxkit.log (kept as a copy of the instance's console.log); elsewhere
  // the instance's console.log.
  std::string ConsoleLogForUser(std::string_view name) const;
};

// Errors: FailedPrecondition when neither FUN_HOME nor a home directory is known, or when
// FUN_HOME is relative.
StatusOr<Paths> ResolvePaths(const PathsInput& in);

// mkdir -p with `mode` for each directory it creates; an existing directory is left as is.
Status MakeDirs(const std::string& path, unsigned mode = 0700);

}  // namespace fun
