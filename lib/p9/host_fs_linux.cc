// Linux parts of HostFs: the openat2 resolver, getdents64 directory reading, and the node
// primitives on O_PATH fds (/proc/self/fd reopening, xattrs through /proc, OFD locks). The
// statx and statfs calls are shared with the portable primitives (host_fs_sys_linux.cc).

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "lib/p9/host_fs_internal.h"

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif

namespace fun::p9::internal {
namespace {

constexpr uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

long Openat2(int dirfd, const char* path, int flags, uint32_t mode, uint64_t resolve) {
  open_how how{};
  how.flags = static_cast<uint64_t>(static_cast<unsigned>(flags));
  how.mode = (flags & O_CREAT) != 0 ? mode : 0;
  how.resolve = resolve;
  long r;
  int attempts = 0;
  do {
    r = ::syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    // EAGAIN: a concurrent rename or mount made the kernel unsure the walk stayed beneath;
    // retrying is what the man page asks for.
  } while (r < 0 && (errno == EINTR || (errno == EAGAIN && ++attempts < 64)));
  return r;
}

// /proc/self/fd, opened once per process; -1 when /proc is not mounted. "self" is resolved when
// it is opened, so a child after fork() must open its own: the parent's would name the parent's
// fds (a test that drops privileges in a child found this).
constexpr int kNotOpened = -2;
std::atomic<int> g_proc_self_fd{kNotOpened};

void ForgetProcSelfFdInChild() {
  int old = g_proc_self_fd.exchange(kNotOpened);
  if (old >= 0) ::close(old);
}

int ProcSelfFd() {
  int fd = g_proc_self_fd.load(std::memory_order_acquire);
  if (fd != kNotOpened) return fd;
  static std::once_flag atfork;
  std::call_once(atfork, [] { ::pthread_atfork(nullptr, nullptr, ForgetProcSelfFdInChild); });
  int opened = ::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
  int expected = kNotOpened;
  if (g_proc_self_fd.compare_exchange_strong(expected, opened)) return opened;
  if (opened >= 0) ::close(opened);  // another thread was first
  return expected;
}

// The decimal name of an fd in /proc/self/fd.
struct FdName {
  char buf[16];
  explicit FdName(int fd) {
    auto r = std::to_chars(buf, buf + sizeof(buf) - 1, fd);
    *r.ptr = '\0';
  }
  const char* c_str() const { return buf; }
};

// "/proc/self/fd/N", for the *xattr calls that take only a path.
struct FdPath {
  char buf[32];
  explicit FdPath(int fd) {
    static constexpr char kPrefix[] = "/proc/self/fd/";
    std::memcpy(buf, kPrefix, sizeof(kPrefix) - 1);
    auto r = std::to_chars(buf + sizeof(kPrefix) - 1, buf + sizeof(buf) - 1, fd);
    *r.ptr = '\0';
  }
  const char* c_str() const { return buf; }
};

class Openat2Resolver final : public Resolver {
 public:
  StatusOr<UniqueFd> OpenAt(int dirfd, const std::string& name, int flags, uint32_t mode) override {
    long fd = Openat2(dirfd, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode, kResolve);
    if (fd < 0) return ErrnoError(errno, "openat2");
    return UniqueFd(static_cast<int>(fd));
  }
  StatusOr<UniqueFd> OpenBeneath(int rootfd, const std::string& relpath, int flags) override {
    const char* path = relpath.empty() ? "." : relpath.c_str();
    long fd = Openat2(rootfd, path, flags | O_NOFOLLOW | O_CLOEXEC, 0, kResolve);
    if (fd < 0) return ErrnoError(errno, "openat2");
    return UniqueFd(static_cast<int>(fd));
  }
  bool reopen_by_fd() const override { return ProcSelfFd() >= 0; }
  std::unique_ptr<DirReader> NewDirReader(UniqueFd dir_fd) override;
};

// Reads with getdents64; offsets are the file system's d_off cookies.
class GetdentsDirReader final : public DirReader {
 public:
  explicit GetdentsDirReader(UniqueFd fd) : fd_(std::move(fd)) {}

  Status Seek(uint64_t offset) override {
    if (offset > static_cast<uint64_t>(INT64_MAX)) return ErrnoError(EINVAL, "readdir offset");
    if (::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_SET) < 0) {
      return ErrnoError(errno, "seekdir");
    }
    pos_ = len_ = 0;
    position_ = offset;
    return OkStatus();
  }

  StatusOr<bool> Peek(Entry* e) override {
    if (pos_ >= len_) {
      long n = ::getdents64(fd_.get(), buf_.get(), kBufSize);
      if (n < 0) return ErrnoError(errno, "getdents64");
      if (n == 0) return false;
      pos_ = 0;
      len_ = static_cast<size_t>(n);
    }
    const auto* d = reinterpret_cast<const struct dirent64*>(buf_.get() + pos_);
    e->name = std::string_view(d->d_name);
    e->ino = d->d_ino;
    e->type = d->d_type;
    e->next_offset = static_cast<uint64_t>(d->d_off);
    return true;
  }

  void Consume() override {
    const auto* d = reinterpret_cast<const struct dirent64*>(buf_.get() + pos_);
    position_ = static_cast<uint64_t>(d->d_off);
    pos_ += d->d_reclen;
  }

  uint64_t position() const override { return position_; }

 private:
  static constexpr size_t kBufSize = 32 * 1024;
  UniqueFd fd_;
  // uint64_t storage keeps dirent64 records aligned.
  std::unique_ptr<char[]> buf_{reinterpret_cast<char*>(new uint64_t[kBufSize / 8])};
  size_t pos_ = 0, len_ = 0;
  uint64_t position_ = 0;
};

std::unique_ptr<DirReader> Openat2Resolver::NewDirReader(UniqueFd dir_fd) {
  return std::make_unique<GetdentsDirReader>(std::move(dir_fd));
}

}  // namespace

bool Openat2Supported() {
  static const bool supported = [] {
    long fd = Openat2(AT_FDCWD, "/", O_PATH | O_CLOEXEC, 0, 0);
    if (fd < 0) return errno != ENOSYS && errno != EINVAL;
    ::close(static_cast<int>(fd));
    return true;
  }();
  return supported;
}

std::unique_ptr<Resolver> NewOpenat2Resolver() { return std::make_unique<Openat2Resolver>(); }

StatusOr<NodeFd> OpenNode(Resolver& resolver, int dirfd, const std::string& name) {
  NodeFd n;
  FUN_ASSIGN_OR_RETURN(n.fd, resolver.OpenAt(dirfd, name, kPathFlags | O_NOFOLLOW, 0));
  if (::fstat(n.fd.get(), &n.st) != 0) return ErrnoError(errno, "fstat");
  return n;
}

StatusOr<UniqueFd> ReopenNodeBeneath(Resolver& resolver, int rootfd, const std::string& path,
                                     mode_t type) {
  return resolver.OpenBeneath(rootfd, path,
                              kPathFlags | O_NOFOLLOW | (type == S_IFDIR ? O_DIRECTORY : 0));
}

Status StatNode(const Target& t, Attr* a) { return SysStatAt(t.fd, "", a); }

Status ChmodNode(const Target& t, uint32_t mode) {
  if (::syscall(SYS_fchmodat2, t.fd, "", mode, AT_EMPTY_PATH) == 0) return OkStatus();
  if (errno != ENOSYS && errno != EINVAL) return ErrnoError(errno, "chmod");
  // Before Linux 6.6: through the magic link (it resolves to the inode, never further).
  int proc = ProcSelfFd();
  if (proc < 0) return ErrnoError(EOPNOTSUPP, "chmod without fchmodat2 or /proc");
  if (::fchmodat(proc, FdName(t.fd).c_str(), mode, 0) != 0) {
    return ErrnoError(errno, "chmod");
  }
  return OkStatus();
}

Status ChownNode(const Target& t, uint32_t uid, uint32_t gid) {
  if (::fchownat(t.fd, "", static_cast<uid_t>(uid), static_cast<gid_t>(gid),
                 AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoError(errno, "chown");
  }
  return OkStatus();
}

Status UtimensNode(const Target& t, const timespec times[2]) {
  const Node& node = t.node;
  if (::utimensat(t.fd, "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0) {
    return OkStatus();
  }
  if (errno != EINVAL || node.is_symlink()) return ErrnoError(errno, "utimensat");
  int proc = ProcSelfFd();
  if (proc < 0) return ErrnoError(EINVAL, "utimensat");
  if (::utimensat(proc, FdName(t.fd).c_str(), times, 0) != 0) {
    return ErrnoError(errno, "utimensat");
  }
  return OkStatus();
}

StatusOr<UniqueFd> ReopenNode(int node_fd, int flags) {
  int proc = ProcSelfFd();
  if (proc < 0) return UnimplementedError("no /proc/self/fd");
  // No O_NOFOLLOW: the magic link must be followed (to the inode, and no further: the caller
  // never passes a symlink node).
  int fd;
  do {
    fd = ::openat(proc, FdName(node_fd).c_str(), (flags & ~O_NOFOLLOW) | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoError(errno, "open");
  return UniqueFd(fd);
}

Status LinkNode(int target_fd, int dirfd, const std::string& name) {
  int proc = ProcSelfFd();
  if (proc < 0) return UnimplementedError("no /proc/self/fd");
  if (::linkat(proc, FdName(target_fd).c_str(), dirfd, name.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    return ErrnoError(errno, "link");
  }
  return OkStatus();
}

StatusOr<std::string> ReadLinkNode(const Target& t) {
  std::string buf(256, '\0');
  while (true) {
    ssize_t n = ::readlinkat(t.fd, "", buf.data(), buf.size());
    if (n < 0) return ErrnoError(errno, "readlink");
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    if (buf.size() >= 65536) return ErrnoError(ENAMETOOLONG, "readlink");
    buf.resize(buf.size() * 4);
  }
}

Status StatFsNode(const Target& t, FsStat* out) { return SysStatFs(t.fd, out); }

StatusOr<std::string> GetXattrNode(const Target& t, const std::string& name) {
  FdPath path(t.fd);
  std::string value(256, '\0');
  while (true) {
    ssize_t n = ::getxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (n >= 0) {
      value.resize(static_cast<size_t>(n));
      return value;
    }
    if (errno != ERANGE) return ErrnoError(errno, "getxattr");
    n = ::getxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (n < 0) return ErrnoError(errno, "getxattr");
    value.resize(static_cast<size_t>(n) + 1);
  }
}

StatusOr<std::string> ListXattrNode(const Target& t) {
  FdPath path(t.fd);
  std::string list(1024, '\0');
  while (true) {
    ssize_t n = ::listxattr(path.c_str(), list.data(), list.size());
    if (n >= 0) {
      list.resize(static_cast<size_t>(n));
      return list;
    }
    if (errno != ERANGE) return ErrnoError(errno, "listxattr");
    n = ::listxattr(path.c_str(), nullptr, 0);
    if (n < 0) return ErrnoError(errno, "listxattr");
    list.resize(static_cast<size_t>(n) + 1);
  }
}

Status SetXattrNode(const Target& t, const std::string& name, std::string_view value, int flags) {
  if (::setxattr(FdPath(t.fd).c_str(), name.c_str(), value.data(), value.size(), flags) != 0) {
    return ErrnoError(errno, "setxattr");
  }
  return OkStatus();
}

Status RemoveXattrNode(const Target& t, const std::string& name) {
  if (::removexattr(FdPath(t.fd).c_str(), name.c_str()) != 0) {
    return ErrnoError(errno, "removexattr");
  }
  return OkStatus();
}

namespace {

Status ToFlock(const HostFs::LockRange& range, struct flock* fl) {
  std::memset(fl, 0, sizeof(*fl));
  switch (range.type) {
    case kLockRead:
      fl->l_type = F_RDLCK;
      break;
    case kLockWrite:
      fl->l_type = F_WRLCK;
      break;
    case kLockUnlock:
      fl->l_type = F_UNLCK;
      break;
    default:
      return ErrnoError(EINVAL, "lock type");
  }
  if (range.start > static_cast<uint64_t>(INT64_MAX) ||
      range.length > static_cast<uint64_t>(INT64_MAX)) {
    return ErrnoError(EINVAL, "lock range");
  }
  fl->l_whence = SEEK_SET;
  fl->l_start = static_cast<off_t>(range.start);
  fl->l_len = static_cast<off_t>(range.length);
  fl->l_pid = 0;  // OFD locks require 0
  return OkStatus();
}

}  // namespace

StatusOr<uint8_t> SetLockFd(int fd, const HostFs::LockRange& range) {
  struct flock fl;
  FUN_RETURN_IF_ERROR(ToFlock(range, &fl));
  int r;
  do {
    r = ::fcntl(fd, F_OFD_SETLK, &fl);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return kLockSuccess;
  if (errno == EAGAIN || errno == EACCES) return kLockBlocked;
  return ErrnoError(errno, "lock");
}

void ReleaseLocksFd(int) {}  // OFD locks go with the last close of the open file

StatusOr<HostFs::LockRange> GetLockFd(int fd, const HostFs::LockRange& range) {
  if (range.type == kLockUnlock) return range;
  struct flock fl;
  FUN_RETURN_IF_ERROR(ToFlock(range, &fl));
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return ErrnoError(errno, "getlock");
  if (fl.l_type == F_UNLCK) {
    HostFs::LockRange none = range;
    none.type = kLockUnlock;
    return none;
  }
  HostFs::LockRange held;
  held.type = fl.l_type == F_RDLCK ? kLockRead : kLockWrite;
  held.start = static_cast<uint64_t>(fl.l_start);
  held.length = static_cast<uint64_t>(fl.l_len);
  return held;
}

}  // namespace fun::p9::internal
