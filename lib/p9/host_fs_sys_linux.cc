// Linux system hooks of HostFs (see host_fs_internal.h): statx with the birth time, statfs, and
// the fd forms of the xattr calls. Shared by the O_PATH primitives (host_fs_linux.cc) and the
// portable ones (host_fs_nodes_posix.cc), so both builds on Linux report the same attributes.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>

#include "lib/p9/host_fs_internal.h"

namespace fun::p9::internal {
namespace {

uint64_t LinuxEncodeDev(uint32_t major, uint32_t minor) {
  // The kernel's new_encode_dev(), which the client's new_decode_dev() undoes.
  return (minor & 0xffu) | (static_cast<uint64_t>(major & 0xfffu) << 8) |
         (static_cast<uint64_t>(minor & ~0xffu) << 12);
}

}  // namespace

Status SysStatAt(int dirfd, const char* name, Attr* a) {
  int flags = AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT | (*name == '\0' ? AT_EMPTY_PATH : 0);
  struct statx sx;
  if (::statx(dirfd, name, flags, STATX_BASIC_STATS | STATX_BTIME, &sx) != 0) {
    return ErrnoError(errno, "statx");
  }
  a->mode = sx.stx_mode;
  a->uid = sx.stx_uid;
  a->gid = sx.stx_gid;
  a->nlink = sx.stx_nlink;
  a->rdev = LinuxEncodeDev(sx.stx_rdev_major, sx.stx_rdev_minor);
  a->size = sx.stx_size;
  a->blksize = sx.stx_blksize;
  a->blocks = sx.stx_blocks;
  a->atime = {sx.stx_atime.tv_sec, sx.stx_atime.tv_nsec};
  a->mtime = {sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec};
  a->ctime = {sx.stx_ctime.tv_sec, sx.stx_ctime.tv_nsec};
  a->has_btime = (sx.stx_mask & STATX_BTIME) != 0;
  if (a->has_btime) a->btime = {sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec};
  a->dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
  a->ino = sx.stx_ino;
  return OkStatus();
}

Status SysStatFs(int fd, FsStat* out) {
  struct statfs s;
  if (::fstatfs(fd, &s) != 0) return ErrnoError(errno, "statfs");
  out->type = static_cast<uint32_t>(s.f_type);
  out->bsize = static_cast<uint32_t>(s.f_bsize);
  out->blocks = s.f_blocks;
  out->bfree = s.f_bfree;
  out->bavail = s.f_bavail;
  out->files = s.f_files;
  out->ffree = s.f_ffree;
  uint64_t lo = static_cast<uint32_t>(s.f_fsid.__val[0]);
  uint64_t hi = static_cast<uint32_t>(s.f_fsid.__val[1]);
  out->fsid = lo | (hi << 32);
  out->namelen = static_cast<uint32_t>(s.f_namelen);
  return OkStatus();
}

ssize_t SysFGetXattr(int fd, const char* name, void* value, size_t size) {
  return ::fgetxattr(fd, name, value, size);
}

ssize_t SysFListXattr(int fd, char* list, size_t size) { return ::flistxattr(fd, list, size); }

int SysFSetXattr(int fd, const char* name, const void* value, size_t size, int flags) {
  return ::fsetxattr(fd, name, value, size, flags);
}

int SysFRemoveXattr(int fd, const char* name) { return ::fremovexattr(fd, name); }

}  // namespace fun::p9::internal
