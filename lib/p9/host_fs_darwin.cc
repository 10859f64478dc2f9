// macOS system hooks of HostFs (see host_fs_internal.h): stat with the birth time, statfs, and
// the fd forms of the xattr calls. Everything else macOS needs is portable and lives in
// host_fs_nodes_posix.cc and host_fs_posix.cc, which are built and tested on Linux.
//
// UNVERIFIED: written to Apple's documented contract (the getxattr(2), fgetxattr(2),
// listxattr(2), setxattr(2), removexattr(2), stat(2) and statfs(2) man pages and <sys/stat.h>,
// <sys/mount.h>, <sys/xattr.h>), but not compiled or run on this project's CI machines, which
// are Linux. Points a macOS run should check first:
//   - the xattr calls take a `position` (0 except for resource forks) and `options`; on an fd
//     XATTR_NOFOLLOW means nothing, so options are 0; a missing attribute is ENOATTR (mapped
//     here to ENODATA, which HostFs and errno_map expect);
//   - XATTR_CREATE/XATTR_REPLACE come from the session with macOS's own values already;
//   - st_birthtimespec is the birth time (APFS and HFS+ keep one);
//   - statfs has no f_namelen (fpathconf _PC_NAME_MAX instead) and its f_type is not a Linux
//     magic number (the guest only shows it).

#if defined(__APPLE__)

#include <sys/mount.h>
#include <sys/param.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>

#include "lib/p9/host_fs_internal.h"

namespace fun::p9::internal {
namespace {

uint64_t LinuxEncodeDev(uint32_t maj, uint32_t min) {
  // The Linux kernel's new_encode_dev(), which the guest's new_decode_dev() undoes.
  return (min & 0xffu) | (static_cast<uint64_t>(maj & 0xfffu) << 8) |
         (static_cast<uint64_t>(min & ~0xffu) << 12);
}

ssize_t NoAttrIsNoData(ssize_t r) {
  if (r < 0 && errno == ENOATTR) errno = ENODATA;
  return r;
}

}  // namespace

Status SysStatAt(int dirfd, const char* name, Attr* a) {
  struct stat st;
  int r = *name == '\0' ? ::fstat(dirfd, &st) : ::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW);
  if (r != 0) return ErrnoError(errno, "stat");
  a->mode = st.st_mode;
  a->uid = st.st_uid;
  a->gid = st.st_gid;
  a->nlink = st.st_nlink;
  a->rdev = LinuxEncodeDev(static_cast<uint32_t>(major(st.st_rdev)),
                           static_cast<uint32_t>(minor(st.st_rdev)));
  a->size = static_cast<uint64_t>(st.st_size);
  a->blksize = static_cast<uint64_t>(st.st_blksize);
  a->blocks = static_cast<uint64_t>(st.st_blocks);
  a->atime = st.st_atimespec;
  a->mtime = st.st_mtimespec;
  a->ctime = st.st_ctimespec;
  a->btime = st.st_birthtimespec;
  // Some file systems (SMB, FAT) have no birth time and report it as 0 or -1 seconds.
  a->has_btime = st.st_birthtimespec.tv_sec > 0;
  a->dev = static_cast<uint64_t>(st.st_dev);
  a->ino = static_cast<uint64_t>(st.st_ino);
  return OkStatus();
}

Status SysStatFs(int fd, FsStat* out) {
  struct statfs s;
  if (::fstatfs(fd, &s) != 0) return ErrnoError(errno, "statfs");
  out->type = s.f_type;
  out->bsize = s.f_bsize;
  out->blocks = s.f_blocks;
  out->bfree = s.f_bfree;
  out->bavail = s.f_bavail;
  out->files = s.f_files;
  out->ffree = s.f_ffree;
  uint64_t lo = static_cast<uint32_t>(s.f_fsid.val[0]);
  uint64_t hi = static_cast<uint32_t>(s.f_fsid.val[1]);
  out->fsid = lo | (hi << 32);
  long name_max = ::fpathconf(fd, _PC_NAME_MAX);
  out->namelen = name_max > 0 ? static_cast<uint32_t>(name_max) : 255;
  return OkStatus();
}

ssize_t SysFGetXattr(int fd, const char* name, void* value, size_t size) {
  return NoAttrIsNoData(::fgetxattr(fd, name, value, size, /*position=*/0, /*options=*/0));
}

ssize_t SysFListXattr(int fd, char* list, size_t size) {
  return ::flistxattr(fd, list, size, /*options=*/0);
}

int SysFSetXattr(int fd, const char* name, const void* value, size_t size, int flags) {
  return ::fsetxattr(fd, name, value, size, /*position=*/0, flags);
}

int SysFRemoveXattr(int fd, const char* name) {
  return static_cast<int>(NoAttrIsNoData(::fremovexattr(fd, name, /*options=*/0)));
}

}  // namespace fun::p9::internal

#endif  // __APPLE__
