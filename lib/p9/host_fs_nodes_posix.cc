// Portable node primitives of HostFs (see host_fs_internal.h): no O_PATH, no /proc.
//
// This is what macOS runs. It is built on Linux too (the fun_p9_portable library, with the walk
// resolver) and passes the same host_fs and server tests there, so everything here is exercised
// on every CI run; only the system hooks (host_fs_darwin.cc) are Apple's own.
//
// How nodes are held:
//   - A directory or regular file the server may read: an O_RDONLY|O_NOFOLLOW fd (O_NONBLOCK and
//     O_NOCTTY too, in case the entry changed under us). A directory that is searchable but not
//     readable gets an O_SEARCH fd where the platform has one (newer macOS).
//   - Anything else (symlinks, FIFOs, sockets, devices, mode-000 files): no fd, so nothing is
//     ever opened that could block, have side effects, or follow a link. Such a node is acted
//     on as entry `name` of directory `dirfd` (HostFs finds the parent again by recorded path
//     and checks st_dev/st_ino first), always with AT_SYMLINK_NOFOLLOW.
// Reopening for I/O goes by recorded path, checked to be the same object (ReopenNode says
// Unimplemented); so does link (LinkNode). Differences from the O_PATH primitives, by design:
//   - A node without an fd follows its name, not its object: after the HOST renames it, calls
//     on it fail ESTALE/ENOENT instead of reaching it at its new place.
//   - User xattrs need an fd: on a node without one, get says EACCES for a regular file or
//     directory (what Linux says when the file may not be read) and ENODATA otherwise; set and
//     remove say EACCES or EPERM (Linux allows no user xattrs on special files); list is empty.
//   - A directory that is searchable but not readable cannot be walked into where there is no
//     O_SEARCH (EACCES), unless the server runs as root.
//   - Locks are kept in a LockTable for the whole process (below), not in the kernel: clients
//     conflict with each other, but not with locks that other host processes take.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>

#include "lib/p9/host_fs_internal.h"
#include "lib/p9/lock_table.h"

namespace fun::p9::internal {
namespace {

Status Err(int err, std::string_view what) { return ErrnoError(err, what); }

bool CanHaveUserXattrs(const Node& node) { return node.is_regular() || node.is_dir(); }

// The locks of every export served by this process, in one table: locks are about files (two
// exports may share files), and owners are open fds, unique in the process. Never destroyed, so
// a fid closed by a static destructor at exit still finds it.
LockTable& Locks() {
  static LockTable* table = new LockTable();
  return *table;
}

// Opens entry `name` as a node fd; an empty fd when the object is not held by an fd.
StatusOr<UniqueFd> OpenNodeFd(Resolver& resolver, int dirfd, const std::string& name, mode_t type) {
  int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  if (type == S_IFDIR) {
    flags |= O_DIRECTORY;
  } else if (type != S_IFREG) {
    return UniqueFd();
  }
  auto fd = resolver.OpenAt(dirfd, name, flags, 0);
  if (fd.ok()) return fd;
  int err = fd.status().sys_errno();
  if (err != EACCES && err != EPERM) return fd.status();
#ifdef O_SEARCH
  if (type == S_IFDIR) {
    auto search = resolver.OpenAt(dirfd, name, O_SEARCH | O_NOFOLLOW | O_CLOEXEC, 0);
    if (search.ok()) return search;
  }
#endif
  return UniqueFd();
}

}  // namespace

bool Openat2Supported() { return false; }
std::unique_ptr<Resolver> NewOpenat2Resolver() { return nullptr; }

StatusOr<NodeFd> OpenNode(Resolver& resolver, int dirfd, const std::string& name) {
  if (!HostFs::ValidName(name) || name == "." || name == "..") return Err(EINVAL, "invalid name");
  NodeFd n;
  if (::fstatat(dirfd, name.c_str(), &n.st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoError(errno, "stat");
  }
  FUN_ASSIGN_OR_RETURN(n.fd, OpenNodeFd(resolver, dirfd, name, n.st.st_mode & S_IFMT));
  // The object held is the truth: the entry may have been replaced between stat and open.
  if (n.fd && ::fstat(n.fd.get(), &n.st) != 0) return ErrnoError(errno, "fstat");
  return n;
}

StatusOr<UniqueFd> ReopenNodeBeneath(Resolver& resolver, int rootfd, const std::string& path,
                                     mode_t type) {
  int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  if (type == S_IFDIR) flags |= O_DIRECTORY;
  auto fd = resolver.OpenBeneath(rootfd, path, flags);
#ifdef O_SEARCH
  if (!fd.ok() && type == S_IFDIR) {
    auto search = resolver.OpenBeneath(rootfd, path, O_SEARCH | O_NOFOLLOW | O_CLOEXEC);
    if (search.ok()) return search;
  }
#endif
  return fd;
}

Status StatNode(const Target& t, Attr* a) {
  if (t.fd >= 0) return SysStatAt(t.fd, "", a);
  return SysStatAt(t.dirfd, t.name, a);
}

Status ChmodNode(const Target& t, uint32_t mode) {
  int r = t.fd >= 0 ? ::fchmod(t.fd, static_cast<mode_t>(mode))
                    : ::fchmodat(t.dirfd, t.name, static_cast<mode_t>(mode), AT_SYMLINK_NOFOLLOW);
  if (r != 0) return ErrnoError(errno, "chmod");
  return OkStatus();
}

Status ChownNode(const Target& t, uint32_t uid, uint32_t gid) {
  // kNoUid is (uid_t)-1, which leaves that id unchanged.
  auto u = static_cast<uid_t>(uid);
  auto g = static_cast<gid_t>(gid);
  int r = t.fd >= 0 ? ::fchown(t.fd, u, g) : ::fchownat(t.dirfd, t.name, u, g, AT_SYMLINK_NOFOLLOW);
  if (r != 0) return ErrnoError(errno, "chown");
  return OkStatus();
}

Status UtimensNode(const Target& t, const timespec times[2]) {
  int r = t.fd >= 0 ? ::futimens(t.fd, times)
                    : ::utimensat(t.dirfd, t.name, times, AT_SYMLINK_NOFOLLOW);
  if (r != 0) return ErrnoError(errno, "utimensat");
  return OkStatus();
}

StatusOr<UniqueFd> ReopenNode(int, int) { return UnimplementedError("no O_PATH: reopen by path"); }

Status LinkNode(int, int, const std::string&) {
  return UnimplementedError("no O_PATH: link by path");
}

StatusOr<std::string> ReadLinkNode(const Target& t) {
  if (t.fd >= 0) return Err(EINVAL, "readlink of a non-symlink");
  std::string buf(256, '\0');
  while (true) {
    ssize_t n = ::readlinkat(t.dirfd, t.name, buf.data(), buf.size());
    if (n < 0) return ErrnoError(errno, "readlink");
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    if (buf.size() >= 65536) return ErrnoError(ENAMETOOLONG, "readlink");
    buf.resize(buf.size() * 4);
  }
}

Status StatFsNode(const Target& t, FsStat* out) {
  // A node without an fd is never a mount point we could tell apart: its parent's file system.
  return SysStatFs(t.fd >= 0 ? t.fd : t.dirfd, out);
}

StatusOr<std::string> GetXattrNode(const Target& t, const std::string& name) {
  if (t.fd < 0) {
    return Err(CanHaveUserXattrs(t.node) ? EACCES : ENODATA, "getxattr without an fd");
  }
  std::string value(256, '\0');
  while (true) {
    ssize_t n = SysFGetXattr(t.fd, name.c_str(), value.data(), value.size());
    if (n >= 0) {
      value.resize(static_cast<size_t>(n));
      return value;
    }
    if (errno != ERANGE) return ErrnoError(errno, "getxattr");
    n = SysFGetXattr(t.fd, name.c_str(), nullptr, 0);
    if (n < 0) return ErrnoError(errno, "getxattr");
    value.resize(static_cast<size_t>(n) + 1);
  }
}

StatusOr<std::string> ListXattrNode(const Target& t) {
  if (t.fd < 0) return std::string();
  std::string list(1024, '\0');
  while (true) {
    ssize_t n = SysFListXattr(t.fd, list.data(), list.size());
    if (n >= 0) {
      list.resize(static_cast<size_t>(n));
      return list;
    }
    if (errno != ERANGE) return ErrnoError(errno, "listxattr");
    n = SysFListXattr(t.fd, nullptr, 0);
    if (n < 0) return ErrnoError(errno, "listxattr");
    list.resize(static_cast<size_t>(n) + 1);
  }
}

Status SetXattrNode(const Target& t, const std::string& name, std::string_view value, int flags) {
  if (t.fd < 0) {
    return Err(CanHaveUserXattrs(t.node) ? EACCES : EPERM, "setxattr without an fd");
  }
  if (SysFSetXattr(t.fd, name.c_str(), value.data(), value.size(), flags) != 0) {
    return ErrnoError(errno, "setxattr");
  }
  return OkStatus();
}

Status RemoveXattrNode(const Target& t, const std::string& name) {
  if (t.fd < 0) {
    return Err(CanHaveUserXattrs(t.node) ? EACCES : EPERM, "removexattr without an fd");
  }
  if (SysFRemoveXattr(t.fd, name.c_str()) != 0) return ErrnoError(errno, "removexattr");
  return OkStatus();
}

namespace {

StatusOr<LockTable::Type> TableType(uint8_t type) {
  switch (type) {
    case kLockRead:
      return LockTable::kRead;
    case kLockWrite:
      return LockTable::kWrite;
    case kLockUnlock:
      return LockTable::kUnlock;
    default:
      return Err(EINVAL, "lock type");
  }
}

// The file an open fd is on, checked to allow the lock asked for (as fcntl: EBADF for a write
// lock on an fd not open for writing, or a read lock on one not open for reading).
StatusOr<LockTable::File> LockedFile(int fd, LockTable::Type type) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return ErrnoError(errno, "lock");
  int acc = fl & O_ACCMODE;
  if ((type == LockTable::kWrite && acc == O_RDONLY) ||
      (type == LockTable::kRead && acc == O_WRONLY)) {
    return Err(EBADF, "lock type does not match the open mode");
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, "fstat");
  return LockTable::File{.dev = static_cast<uint64_t>(st.st_dev),
                         .ino = static_cast<uint64_t>(st.st_ino)};
}

Status CheckLockRange(const HostFs::LockRange& range) {
  // What the Linux primitives (and so fcntl) answer: EINVAL past off_t, EOVERFLOW past its end.
  if (range.start > LockTable::kMaxOffset || range.length > LockTable::kMaxOffset) {
    return Err(EINVAL, "lock range");
  }
  return LockTable::ValidateRange(range.start, range.length);
}

}  // namespace

StatusOr<uint8_t> SetLockFd(int fd, const HostFs::LockRange& range) {
  FUN_ASSIGN_OR_RETURN(LockTable::Type type, TableType(range.type));
  FUN_RETURN_IF_ERROR(CheckLockRange(range));
  FUN_ASSIGN_OR_RETURN(LockTable::File file, LockedFile(fd, type));
  FUN_ASSIGN_OR_RETURN(bool granted, Locks().Set(file, static_cast<LockTable::Owner>(fd), type,
                                                 range.start, range.length));
  return granted ? kLockSuccess : kLockBlocked;
}

StatusOr<HostFs::LockRange> GetLockFd(int fd, const HostFs::LockRange& range) {
  FUN_ASSIGN_OR_RETURN(LockTable::Type type, TableType(range.type));
  if (type == LockTable::kUnlock) return range;
  FUN_RETURN_IF_ERROR(CheckLockRange(range));
  FUN_ASSIGN_OR_RETURN(LockTable::File file, LockedFile(fd, LockTable::kUnlock));
  FUN_ASSIGN_OR_RETURN(
      std::optional<LockTable::Lock> held,
      Locks().Test(file, static_cast<LockTable::Owner>(fd), type, range.start, range.length));
  if (!held) {
    HostFs::LockRange none = range;
    none.type = kLockUnlock;
    return none;
  }
  HostFs::LockRange out;
  out.type = held->type == LockTable::kRead ? kLockRead : kLockWrite;
  out.start = held->start;
  out.length = held->length;
  return out;
}

void ReleaseLocksFd(int fd) { Locks().ReleaseOwner(static_cast<LockTable::Owner>(fd)); }

}  // namespace fun::p9::internal
