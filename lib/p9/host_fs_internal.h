// host_fs_internal.h: the platform seams of HostFs (not for use outside lib/p9).
//
// host_fs.cc holds the confinement logic once, in portable POSIX calls. What differs per
// platform or per path-resolution strategy is here:
//   - Resolver: how a name or a multi-component path is opened beneath a directory without
//     following any symlink (host_fs_linux.cc: openat2; host_fs_posix.cc: a per-component walk).
//   - The node primitives (stat with btime, chmod/chown/utimes/readlink/xattrs on an O_PATH fd,
//     reopening an O_PATH fd, OFD locks): host_fs_linux.cc. A macOS port supplies the same
//     functions in host_fs_darwin.cc.
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

// Flags that open a node: an fd on the object that allows no I/O.
#ifdef O_PATH
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

// host_fs_linux.cc
bool Openat2Supported();
std::unique_ptr<Resolver> NewOpenat2Resolver();
// host_fs_posix.cc
std::unique_ptr<Resolver> NewWalkResolver();
std::unique_ptr<DirReader> NewPortableDirReader(UniqueFd dir_fd);

// Node primitives (host_fs_linux.cc). `node` is never a symlink where a comment says so.
Status StatFd(int fd, Attr* out);                                // no qid
Status ChmodNode(const Node& node, uint32_t mode);               // not a symlink
Status ChownNode(const Node& node, uint32_t uid, uint32_t gid);  // kNoUid: unchanged
Status UtimensNode(const Node& node, const timespec times[2]);
// Unimplemented when the platform cannot (no /proc): the caller reopens by path.
StatusOr<UniqueFd> ReopenNode(const Node& node, int flags);  // not a symlink, not a directory
Status LinkNode(const Node& target, int dirfd, const std::string& name);  // or Unimplemented
StatusOr<std::string> ReadLinkNode(const Node& node);
Status StatFsFd(int fd, FsStat* out);
StatusOr<std::string> GetXattrNode(const Node& node, const std::string& name);
StatusOr<std::string> ListXattrNode(const Node& node);
Status SetXattrNode(const Node& node, const std::string& name, std::string_view value, int flags);
Status RemoveXattrNode(const Node& node, const std::string& name);
StatusOr<uint8_t> SetLockFd(int fd, const HostFs::LockRange& range);
StatusOr<HostFs::LockRange> GetLockFd(int fd, const HostFs::LockRange& range);

}  // namespace fun::p9::internal
