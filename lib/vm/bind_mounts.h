// bind_mounts.h: `fun run -v HOSTPATH:CTRPATH[:ro|:rw]` (Docker's bind mounts), from the flag's
// text to the mounts containerd gets (cri::BindMount), natively or in a VM instance.
//
//   FUN_ASSIGN_OR_RETURN(std::vector<VolumeSpec> specs, ParseVolumeSpecs({"/home/a/src:/src:ro"}));
//   VmShares vm{.shares = ResolveShareHostPaths(config.shares),
//               .config_path = paths.InstanceFile("default", InstanceFileKind::kConfig),
//               .instance = "default"};
//   FUN_ASSIGN_OR_RETURN(std::vector<cri::BindMount> mounts, PlanBindMounts(specs, &vm));
//
// Three steps, the outer two pure so that tests (and the harness, for a real VM) can use them:
//   1. ParseVolumeSpec: the flag's syntax (no file system).
//   2. ResolveHostPath: realpath(3) on this host, so a path is judged by what it leads to (a
//      symlink into a share is inside it, a symlink out of a share is not).
//   3. MapHostPathToGuest (a VM instance only): the path in the VM, through the instance's
//      shares (host folders the VM mounts over 9P). The share whose host_path holds the path
//      with the most components wins, the first in config order on a tie; components, not
//      characters: /home/a holds /home/a/x but not /home/ab. The rest of the path is appended
//      to the share's guest_path (by default the same path as on the host). Natively the
//      host path is mounted as it is.
//
// Decisions, where Docker, Docker Desktop and Lima differ:
//   - Bind mounts only. A HOSTPATH without "/" is a Docker named volume, refused as such; a
//     relative one (./data, ~/data) is refused; a lone path (Docker's anonymous volume) too.
//     Paths with ":" cannot be given (the separator), nor Windows paths (C:\data).
//   - A missing host path is refused, not created: Docker's -v makes a root-owned empty
//     directory, so a typo silently mounts nothing; Docker's --mount, Podman and Lima refuse.
//     The error says to create it first. `fun start` checks again (lib users: CheckHostPaths).
//   - Options: "ro" or "rw", once. Anything else (z, Z, shared, nocopy, cached, delegated) is
//     refused rather than silently dropped.
//   - A read-only share: a mount without ":ro"/":rw" is made read-only (--debug says so), so
//     `fun inspect` tells the truth; an explicit ":rw" is refused (every write would fail).
//   - CTRPATH is cleaned as Docker does (filepath.Clean: "/data/./x/" is "/data/x"); "/" and a
//     CTRPATH given twice are refused.
//
// Every error is one line starting with "-v SPEC: " and says what to do.
//
// Thread-safety: pure functions and values; ResolveHostPath reads the file system.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/instance_config.h"
#include "lib/base/status.h"
#include "lib/cri/engine.h"

namespace fun::vm {

// One -v as typed.
struct VolumeSpec {
  enum class Mode { kDefault, kReadOnly, kReadWrite };
  std::string spec;            // the flag's text, for messages
  std::string host_path;       // absolute, as typed (resolved later)
  std::string container_path;  // absolute, cleaned, never "/"
  Mode mode = Mode::kDefault;

  friend bool operator==(const VolumeSpec&, const VolumeSpec&) = default;
};

// Parses one -v value; InvalidArgument says what is wrong and what to give instead.
StatusOr<VolumeSpec> ParseVolumeSpec(std::string_view spec);
// Every -v of a run; also refuses a container path given twice.
StatusOr<std::vector<VolumeSpec>> ParseVolumeSpecs(const std::vector<std::string>& specs);

// Lexical cleaning of an absolute path, as Go's path.Clean: "//a/./b/../c/" -> "/a/c"; ".."
// at the root stays at the root. The input must start with "/".
std::string CleanAbsolutePath(std::string_view path);

// realpath(3) of an absolute host path. NotFound (with "create it first") when it or a parent
// does not exist; other failures (permission, a file used as a directory) as ErrnoError.
StatusOr<std::string> ResolveHostPath(const std::string& path);

// A host path's place in the VM.
struct GuestLocation {
  std::string guest_path;  // where the host path is in the VM
  Share share;             // the share it is under
};

// What a VM instance shares, for messages too.
struct VmShares {
  std::vector<Share> shares;  // host_path resolved (ResolveShareHostPaths) when comparing with
                              // resolved paths
  std::string config_path;    // the instance's config.json, named in the error
  std::string instance;       // named in the error
};

// The path in the VM where `host_path` (absolute, clean) is, through `vm.shares`: see the top
// of this file. FailedPrecondition when no share holds it:
//   /srv/data is not under a shared folder (shares: /home/a); share it: fun-vmctl stop default
//   && fun-vmctl start default --share /srv/data (or add it to "shares" in <config.json>)
StatusOr<GuestLocation> MapHostPathToGuest(std::string_view host_path, const VmShares& vm);

// Each share's host_path through realpath(3) (kept as written when that fails: a missing
// folder holds nothing that exists), so resolved paths compare with resolved paths (a share of
// /tmp on macOS holds /private/tmp/x).
std::vector<Share> ResolveShareHostPaths(std::vector<Share> shares);

// The mounts for a run: each host path resolved and, with `vm` (a VM instance), mapped into
// the VM; without `vm` (native, unix:), mounted as it is. Nothing is created.
StatusOr<std::vector<cri::BindMount>> PlanBindMounts(const std::vector<VolumeSpec>& specs,
                                                     const VmShares* vm);

// `fun start`: every mount's host path still exists (a folder removed since the run would
// otherwise be made again, empty, by containerd). NotFound names it.
Status CheckHostPaths(const std::vector<cri::BindMount>& mounts);

}  // namespace fun::vm
