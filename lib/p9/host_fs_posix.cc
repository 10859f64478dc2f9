// Portable parts of HostFs: the per-component walk resolver (no openat2) and a directory reader
// on opendir/readdir/telldir/seekdir. This is the path macOS takes; it is built and tested on
// Linux too (ResolverKind::kWalk).

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

#include "lib/p9/host_fs_internal.h"

namespace fun::p9::internal {
namespace {

StatusOr<UniqueFd> OpenOne(int dirfd, const std::string& name, int flags, uint32_t mode) {
  int fd;
  do {
    fd = ::openat(dirfd, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, static_cast<mode_t>(mode));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoError(errno, "openat");
  return UniqueFd(fd);
}

class WalkResolver final : public Resolver {
 public:
  StatusOr<UniqueFd> OpenAt(int dirfd, const std::string& name, int flags, uint32_t mode) override {
    if (!HostFs::ValidName(name) || name == "..") return ErrnoError(EINVAL, "invalid name");
    return OpenOne(dirfd, name, flags, mode);
  }

  StatusOr<UniqueFd> OpenBeneath(int rootfd, const std::string& relpath, int flags) override {
    if (relpath.empty()) {
      int fd = ::openat(rootfd, ".", (flags & ~O_NOFOLLOW) | O_CLOEXEC);
      if (fd < 0) return ErrnoError(errno, "openat");
      return UniqueFd(fd);
    }
    // Every directory on the way is opened with O_NOFOLLOW|O_DIRECTORY: a symlink anywhere
    // (planted before or swapped in during the walk) fails the walk instead of leading out.
    UniqueFd cur;
    int at = rootfd;
    size_t pos = 0;
    while (true) {
      size_t slash = relpath.find('/', pos);
      std::string comp = relpath.substr(pos, slash == std::string::npos ? slash : slash - pos);
      if (!HostFs::ValidName(comp) || comp == "." || comp == "..") {
        return ErrnoError(EINVAL, "invalid path component");
      }
      if (slash == std::string::npos) return OpenOne(at, comp, flags, 0);
      FUN_ASSIGN_OR_RETURN(UniqueFd next, OpenOne(at, comp, kPathFlags | O_DIRECTORY, 0));
      cur = std::move(next);
      at = cur.get();
      pos = slash + 1;
    }
  }

  bool reopen_by_fd() const override { return false; }

  std::unique_ptr<DirReader> NewDirReader(UniqueFd dir_fd) override {
    return NewPortableDirReader(std::move(dir_fd));
  }
};

// Offsets are telldir() cookies of the reader's own DIR stream (valid for its lifetime, which
// is the fid's).
class PortableDirReader final : public DirReader {
 public:
  explicit PortableDirReader(UniqueFd fd) {
    dir_ = ::fdopendir(fd.get());
    if (dir_ != nullptr) {
      fd.release();
    } else {
      open_errno_ = errno;
    }
  }
  ~PortableDirReader() override {
    if (dir_ != nullptr) ::closedir(dir_);
  }

  Status Seek(uint64_t offset) override {
    if (dir_ == nullptr) return ErrnoError(open_errno_, "fdopendir");
    if (offset == 0) {
      ::rewinddir(dir_);
    } else {
      ::seekdir(dir_, static_cast<long>(offset));
    }
    have_ = false;
    position_ = offset;
    return OkStatus();
  }

  StatusOr<bool> Peek(Entry* e) override {
    if (dir_ == nullptr) return ErrnoError(open_errno_, "fdopendir");
    if (!have_) {
      errno = 0;
      struct dirent* d = ::readdir(dir_);
      if (d == nullptr) {
        if (errno != 0) return ErrnoError(errno, "readdir");
        return false;
      }
      name_ = d->d_name;
      cur_.ino = d->d_ino;
      cur_.type = d->d_type;
      cur_.next_offset = static_cast<uint64_t>(::telldir(dir_));
      have_ = true;
    }
    *e = cur_;
    e->name = name_;
    return true;
  }

  void Consume() override {
    position_ = cur_.next_offset;
    have_ = false;
  }

  uint64_t position() const override { return position_; }

 private:
  DIR* dir_ = nullptr;
  int open_errno_ = 0;
  bool have_ = false;
  std::string name_;
  Entry cur_;
  uint64_t position_ = 0;
};

}  // namespace

std::unique_ptr<Resolver> NewWalkResolver() { return std::make_unique<WalkResolver>(); }

std::unique_ptr<DirReader> NewPortableDirReader(UniqueFd dir_fd) {
  return std::make_unique<PortableDirReader>(std::move(dir_fd));
}

}  // namespace fun::p9::internal
