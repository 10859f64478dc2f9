// host_fs_internal.h: the platform seams of HostFs (not for use outside lib/p9).
//
// host_fs.cc holds the confinement logic once, in portable POSIX calls. What differs per
// platform or per path-resolution strategy is here:
//   - Resolver: how a name or a multi-component path is opened beneath a directory without
//     following any symlink (host_fs_linux.cc: openat2; host_fs_posix.cc: a per-component walk).
//   - The node primitives: how a node is held and acted on. Two sets:
//       host_fs_linux.cc        O_PATH fds, statx, /proc/self/fd reopening, OFD locks (Linux);
//       host_fs_nodes_posix.cc  no O_PATH, no /proc: O_RDONLY fds where allowed, else the entry
//                               in the parent directory; locks in an in-process LockTable
//                               (macOS; built and tested on Linux too as fun_p9_portable).
//   - The system hooks the portable set needs where POSIX has no call (birth time, statfs,
//     xattrs on an fd): host_fs_sys_linux.cc and host_fs_darwin.cc.
// The portable set goes with the walk resolver only: FUN_P9_PORTABLE_NODES is defined for it.
//
// Thread-safety: every function and Resolver method is safe to call from many threads.
#pragma once

#include <fcntl.h>

#include <memory>
#include <string>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/p9/host_fs.h"

namespace fun::p9::internal {

// Flags that open a directory to resolve names in (and, with O_PATH, any node): an fd on the
// object that allows no I/O where the platform has O_PATH.
#if defined(O_PATH) && !defined(FUN_P9_PORTABLE_NODES)
inline constexpr int kPathFlags = O_PATH | O_CLOEXEC;
#else
inline constexpr int kPathFlags = O_RDONLY | O_CLOEXEC;
#endif

class Resolver {
 public:
  virtual ~Resolver() = default;
  // Opens one validated name in directory `dirfd` without following a symlink: with
  // kPathFlags|O_NOFOLLOW a symlink gives the link itself, otherwise ELOOP. `mode` with O_CREAT.
  virtual StatusOr<UniqueFd> OpenAt(int dirfd, const std::string& name, int flags,
                                    uint32_t mode) = 0;
  // Opens `relpath` ("a/b/c" of validated names; "" is `rootfd` itself) beneath `rootfd`,
  // following no symlink anywhere and never leaving `rootfd`.
  virtual StatusOr<UniqueFd> OpenBeneath(int rootfd, const std::string& relpath, int flags) = 0;
  // True when a node's fd may be reopened with new flags in place (/proc/self/fd); else the
  // node is reopened by its recorded path and checked to be the same object.
  virtual bool reopen_by_fd() const = 0;
  virtual std::unique_ptr<DirReader> NewDirReader(UniqueFd dir_fd) = 0;
};

// host_fs_linux.cc (false / nullptr with the portable node primitives)
bool Openat2Supported();
std::unique_ptr<Resolver> NewOpenat2Resolver();
// host_fs_posix.cc
std::unique_ptr<Resolver> NewWalkResolver();
std::unique_ptr<DirReader> NewPortableDirReader(UniqueFd dir_fd);

// ---- Node primitives (host_fs_linux.cc or host_fs_nodes_posix.cc) ----

// A node's fd (possibly none: see Node::fd) and the stat of its object.
struct NodeFd {
  UniqueFd fd;
  struct stat st;
};
// Opens the node for entry `name` (validated) of directory `dirfd`, never following a symlink.
StatusOr<NodeFd> OpenNode(Resolver& resolver, int dirfd, const std::string& name);
// Opens the fd again for an evicted node (one that has_fd()) of type `type` (S_IFMT bits) at
// `path` beneath `rootfd`, as OpenNode opened it; the caller checks it is the same object.
StatusOr<UniqueFd> ReopenNodeBeneath(Resolver& resolver, int rootfd, const std::string& path,
                                     mode_t type);

// What a primitive acts on: the node's fd (`fd`, held by HostFs::HoldFd) when the node has one;
// else the entry `name` of directory `dirfd`, which HostFs found again by recorded path and
// checked to be the node's object.
struct Target {
  const Node& node;
  int fd = -1;
  int dirfd = -1;
  const char* name = nullptr;
};

// `node` is never a symlink where a comment says so.
Status StatNode(const Target& t, Attr* out);                    // no qid
Status ChmodNode(const Target& t, uint32_t mode);               // not a symlink
Status ChownNode(const Target& t, uint32_t uid, uint32_t gid);  // kNoUid: unchanged
Status UtimensNode(const Target& t, const timespec times[2]);
// Unimplemented when the platform cannot (no /proc): the caller reopens by path.
// `node_fd`: a node's fd (HostFs::HoldFd).
StatusOr<UniqueFd> ReopenNode(int node_fd, int flags);  // not a symlink, not a directory
Status LinkNode(int target_fd, int dirfd, const std::string& name);  // or Unimplemented
StatusOr<std::string> ReadLinkNode(const Target& t);
Status StatFsNode(const Target& t, FsStat* out);
StatusOr<std::string> GetXattrNode(const Target& t, const std::string& name);
StatusOr<std::string> ListXattrNode(const Target& t);
Status SetXattrNode(const Target& t, const std::string& name, std::string_view value, int flags);
Status RemoveXattrNode(const Target& t, const std::string& name);
StatusOr<uint8_t> SetLockFd(int fd, const HostFs::LockRange& range);
StatusOr<HostFs::LockRange> GetLockFd(int fd, const HostFs::LockRange& range);
void ReleaseLocksFd(int fd);

// ---- System hooks (host_fs_sys_linux.cc, host_fs_darwin.cc) ----
// Thin wrappers over calls that POSIX lacks or that differ in shape; errno-style results, with
// errno in host terms but a missing attribute always ENODATA.

// stat of entry `name` of `dirfd` (name "": `dirfd` itself), never following a symlink, with
// the birth time where the file system keeps one and rdev in the Linux encoding.
Status SysStatAt(int dirfd, const char* name, Attr* out);
Status SysStatFs(int fd, FsStat* out);
ssize_t SysFGetXattr(int fd, const char* name, void* value, size_t size);
ssize_t SysFListXattr(int fd, char* list, size_t size);
int SysFSetXattr(int fd, const char* name, const void* value, size_t size, int flags);
int SysFRemoveXattr(int fd, const char* name);

}  // namespace fun::p9::internal
