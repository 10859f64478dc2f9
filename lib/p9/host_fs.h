// host_fs.h: the confined host-filesystem backend of the 9P server: one HostFs per export.
//
// Confinement (security critical): nothing outside the exported folder is ever read, written,
// created or stat'ed, whatever names the client sends and whatever the host does concurrently.
//   - A Node holds an fd on the object itself (Linux: O_PATH|O_NOFOLLOW) and every operation is
//     relative to such an fd with ONE validated name: never an absolute path, never a path with
//     '/', never a symlink followed. A symlink is a node of its own (readlink works, opening it
//     fails ELOOP, walking through it fails ENOTDIR).
//   - Without O_PATH (macOS; the "portable" build on Linux), a node holds an O_RDONLY fd on a
//     directory or regular file it may read, and no fd at all on anything else (symlinks,
//     FIFOs, sockets, devices, files it may not read): such a node is acted on as the entry of
//     its parent directory, found again by recorded path from the root and checked to be the
//     same object (ESTALE otherwise), with *at calls and AT_SYMLINK_NOFOLLOW.
//   - Multi-component paths are only resolved from the export root, with a Resolver that never
//     follows a symlink: kOpenat2 uses openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//     RESOLVE_NO_MAGICLINKS) (host_fs_linux.cc); kWalk opens one component at a time with
//     O_NOFOLLOW|O_DIRECTORY (host_fs_posix.cc, the portable path for macOS). Both are built on
//     Linux and pass the same tests.
//   - ".." at the root stays at the root; elsewhere it resolves the node's recorded path from
//     the root (never openat(fd, "..")), so a directory moved out of the export cannot lead out.
//   - Names must be non-empty with no '/' and no NUL. "." and ".." are refused where a new entry
//     is named or an entry is removed or renamed: EEXIST for the creating calls (what mkdir(".")
//     says on Linux), EINVAL for rename/unlink.
//   - Device nodes are never created (mknod of a char/block device: EPERM) nor opened (EPERM): a
//     guest could otherwise reach the host's disks through a server running as root.
//   - Extended attributes: only the "user." namespace is read or written (a guest must not set
//     security.capability or trusted.* on host files); other names read as ENODATA, write as
//     EOPNOTSUPP, and are left out of lists.
//   - A read-only export answers EROFS to every change.
//   - Known limit: a node follows its object when the HOST renames it; a directory that the host
//     user moves out of the export can still be walked into by a client holding a fid on it (as
//     with any open directory). Its recorded path, used for "..", then no longer matches.
//
// Node fds are a budget (NodeFdCache): a client may hold a fid on every file of a big tree (the
// Linux client with cache=loose keeps one per cached dentry), and one fd per node would run the
// process out of fds (EMFILE: 20000 on the Linux CI machines; macOS caps a process at OPEN_MAX,
// 10240). Past the budget, the least recently used node gives its fd back and gets a new one on
// its next use, by recorded path from the root, checked to be the same object. Such a node has,
// until then, the portable set's behaviour: it follows its name, not its object, so after the
// HOST renames or deletes it, calls on it fail ESTALE (renames by the client update the recorded
// path and are fine). Only cold nodes are evicted, and only past the budget.
//
// Ownership: with OwnerPolicy::kAuto, a server running as root gives new files the uid of the
// attach (n_uname) and the gid the client names, and honours chown in setattr; a server running
// as a normal user creates files as itself and silently ignores chown (as Docker Desktop's file
// sharing does). Modes are applied exactly as asked (the process umask is undone).
//
// Example:
//   FUN_ASSIGN_OR_RETURN(auto fs, HostFs::Open("/home/me/src", {.read_only = true}));
//   FUN_ASSIGN_OR_RETURN(std::shared_ptr<Node> root, fs->Root());
//   FUN_ASSIGN_OR_RETURN(std::shared_ptr<Node> f, fs->Walk(*root, "main.cc"));
//   FUN_ASSIGN_OR_RETURN(Attr a, fs->GetAttr(*f));
//   FUN_ASSIGN_OR_RETURN(UniqueFd fd, fs->Open(*f, O_RDONLY));
//
// Thread-safety: a HostFs and its Nodes are safe to use from many threads at once. A DirReader
// is not (the server guards each with its fid's mutex).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/p9/codec.h"
#include "lib/p9/messages.h"

namespace fun::p9 {

enum class ResolverKind {
  kAuto,     // kOpenat2 where the kernel has it, else kWalk
  kOpenat2,  // Linux 5.6+: openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS
  kWalk,     // portable: one openat(O_NOFOLLOW) per component
};
std::string_view ResolverName(ResolverKind kind);

enum class OwnerPolicy {
  kAuto,        // kClientIds when running as root, else kServerUser
  kClientIds,   // chown new files to the client's uid/gid; honour setattr uid/gid
  kServerUser,  // files belong to the server's user; setattr uid/gid are ignored (succeed)
};

class Node;

// How many node fds stay open (see the header comment), shared by the exports it is given to.
// Thread-safe.
class NodeFdCache {
 public:
  // At most `max_fds` node fds open at once (at least 1), not counting the export roots and fds
  // in use by a call at that moment.
  explicit NodeFdCache(size_t max_fds);
  NodeFdCache(const NodeFdCache&) = delete;
  NodeFdCache& operator=(const NodeFdCache&) = delete;

  // The process's cache, what every HostFs uses unless its options name another: a quarter of
  // the open-file soft limit at its first use, at least 64 (fun-hostd raises the soft limit to
  // the hard one first). The rest is for open files: the Linux client with cache=loose keeps a
  // file open (a writeback fid) for every file it wrote while it caches the file.
  static std::shared_ptr<NodeFdCache> ForProcess();

  size_t max_fds() const { return max_fds_; }
  size_t open_fds() const;
  uint64_t evictions() const;  // fds given back
  uint64_t reopens() const;    // fds opened again for an evicted node

 private:
  friend class Node;
  friend class HostFs;

  mutable std::mutex mu_;
  const size_t max_fds_;
  std::list<const Node*> lru_;  // nodes holding an fd; front: most recently used
  uint64_t evictions_ = 0, reopens_ = 0;
};

struct HostFsOptions {
  bool read_only = false;
  ResolverKind resolver = ResolverKind::kAuto;
  OwnerPolicy owner = OwnerPolicy::kAuto;
  // nullptr: NodeFdCache::ForProcess().
  std::shared_ptr<NodeFdCache> fd_cache;
};

// A node's fd while a call uses it: an evicted node's fd stays open until the last user lets go.
using NodeFdRef = std::shared_ptr<const UniqueFd>;

// What getattr reports, in host terms (rdev in the Linux encoding the client decodes).
struct Attr {
  uint32_t mode = 0;  // S_IFMT type bits and permission bits
  uint32_t uid = 0, gid = 0;
  uint64_t nlink = 0, rdev = 0, size = 0, blksize = 0, blocks = 0;
  timespec atime{}, mtime{}, ctime{}, btime{};
  bool has_btime = false;
  uint64_t dev = 0, ino = 0;
  Qid qid;
};

struct FsStat {
  uint32_t type = 0, bsize = 0, namelen = 0;
  uint64_t blocks = 0, bfree = 0, bavail = 0, files = 0, ffree = 0, fsid = 0;
};

// uid/gid to give a new file; kNoUid leaves that one to the server's defaults.
struct Owner {
  uint32_t uid = kNoUid;
  uint32_t gid = kNoUid;
};

struct SetAttrRequest {
  std::optional<uint32_t> mode;  // permission bits (07777)
  std::optional<uint32_t> uid, gid;
  std::optional<uint64_t> size;
  // tv_nsec UTIME_OMIT (the default) leaves a time alone; UTIME_NOW sets it to now.
  timespec atime{0, UTIME_OMIT}, mtime{0, UTIME_OMIT};
};

// One held file-system object of an export. Immutable except for its recorded path and whether
// its fd is open at the moment (see NodeFdCache).
class Node {
 public:
  // With a cache, the node's fd counts against its budget and may be evicted; without one (the
  // export roots) the node keeps its fd for life.
  Node(UniqueFd fd, std::string path, uint32_t mode, uint64_t dev, uint64_t ino, Qid qid,
       std::shared_ptr<NodeFdCache> cache = nullptr);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // True when the node is acted on through an fd on its object (Linux: O_PATH|O_NOFOLLOW, every
  // node); false only without O_PATH, see the header comment. The fd itself is taken with
  // HostFs::HoldFd: it may have been given back to the cache and is then opened again.
  bool has_fd() const { return has_fd_; }
  // Whether the fd is open right now (false after an eviction, until the next use).
  bool fd_open() const;
  // Path from the export root, components joined by '/'; "" for the root.
  std::string path() const {
    std::lock_guard<std::mutex> lock(mu_);
    return path_;
  }
  void set_path(std::string path) {
    std::lock_guard<std::mutex> lock(mu_);
    path_ = std::move(path);
  }
  uint32_t type() const { return type_; }  // S_IFMT bits
  bool is_dir() const { return type_ == S_IFDIR; }
  bool is_symlink() const { return type_ == S_IFLNK; }
  bool is_regular() const { return type_ == S_IFREG; }
  uint64_t dev() const { return dev_; }
  uint64_t ino() const { return ino_; }
  const Qid& qid() const { return qid_; }

 private:
  friend class HostFs;
  friend class NodeFdCache;

  // The fd when it is open (a use: the node moves to the front of its cache), else null.
  NodeFdRef HeldFd() const;
  // Takes `fd`, opened again for an evicted node; returns the fd the node holds after (another
  // thread's, when it was faster).
  NodeFdRef Adopt(UniqueFd fd) const;
  // Puts the node at the front of its cache, evicting past the budget; returns the evicted fds
  // (to be let go of outside the cache's lock). Needs cache_->mu_.
  std::vector<NodeFdRef> InsertLocked() const;

  const bool has_fd_;
  const std::shared_ptr<NodeFdCache> cache_;
  // Guarded by cache_->mu_ when there is a cache; set once otherwise.
  mutable NodeFdRef fd_;
  mutable std::list<const Node*>::iterator lru_pos_;
  mutable bool in_lru_ = false;
  mutable std::mutex mu_;
  std::string path_;
  uint32_t type_;
  uint64_t dev_, ino_;
  Qid qid_;
};

// Reads the entries of one open directory, resuming at offsets it gave out earlier.
// Offsets are the file system's own cookies (getdents64 d_off / telldir), so they stay valid
// across calls and the Linux client's "offset of the last entry I got" continues right after it.
class DirReader {
 public:
  struct Entry {
    std::string_view name;
    uint64_t ino = 0;
    uint8_t type = 0;          // DT_*
    uint64_t next_offset = 0;  // the offset that continues after this entry
  };
  virtual ~DirReader() = default;
  // Positions the reader so the next entry is the one after the entry whose next_offset is
  // `offset`; 0 is the start.
  virtual Status Seek(uint64_t offset) = 0;
  // The next entry without consuming it; false at the end. Valid until the next call.
  virtual StatusOr<bool> Peek(Entry* entry) = 0;
  virtual void Consume() = 0;
  // The offset of the next entry (0 at the start).
  virtual uint64_t position() const = 0;
};

namespace internal {
class Resolver;
}  // namespace internal

class HostFs {
 public:
  // Opens `dir` (must exist and be a directory) as an export root.
  static StatusOr<std::unique_ptr<HostFs>> Open(const std::string& dir, HostFsOptions options = {});
  ~HostFs();
  HostFs(const HostFs&) = delete;
  HostFs& operator=(const HostFs&) = delete;

  const std::string& dir() const { return dir_; }
  bool read_only() const { return options_.read_only; }
  ResolverKind resolver_kind() const { return resolver_kind_; }
  bool sets_owner() const { return sets_owner_; }

  // A new node on the export root.
  StatusOr<std::shared_ptr<Node>> Root();
  // The fd of a node that has_fd(), open for as long as the result is kept: the node's own, or,
  // after an eviction, a new one found by recorded path and checked to be the same object
  // (ESTALE otherwise).
  StatusOr<NodeFdRef> HoldFd(const Node& node);

  // One step: a name in directory `dir`, "." (the same object) or "..". Symlinks are not
  // followed: walking onto one gives the link itself.
  StatusOr<std::shared_ptr<Node>> Walk(const std::shared_ptr<Node>& dir, const std::string& name);

  StatusOr<Attr> GetAttr(const Node& node);
  Status SetAttr(const Node& node, const SetAttrRequest& req);
  StatusOr<FsStat> StatFs(const Node& node);
  StatusOr<std::string> ReadLink(const Node& node);

  // Opens the object for I/O with host open flags (O_ACCMODE, O_TRUNC, O_APPEND, O_DIRECTORY,
  // O_SYNC/O_DSYNC, O_NONBLOCK). Symlink: ELOOP; device: EPERM; socket: ENXIO.
  StatusOr<UniqueFd> Open(const Node& node, int flags);

  struct Created {
    std::shared_ptr<Node> node;
    UniqueFd fd;  // open with the asked flags
  };
  // Creates (or, without O_EXCL, opens an existing) regular file `name` in `dir`.
  StatusOr<Created> Create(const Node& dir, const std::string& name, int flags, uint32_t mode,
                           Owner owner);
  StatusOr<std::shared_ptr<Node>> Mkdir(const Node& dir, const std::string& name, uint32_t mode,
                                        Owner owner);
  StatusOr<std::shared_ptr<Node>> Symlink(const Node& dir, const std::string& name,
                                          const std::string& target, Owner owner);
  // FIFOs, sockets and empty regular files; device nodes are refused (EPERM).
  StatusOr<std::shared_ptr<Node>> Mknod(const Node& dir, const std::string& name, uint32_t mode,
                                        Owner owner);
  // A new name `name` in `dir` for `target` (not a directory).
  Status Link(const Node& target, const Node& dir, const std::string& name);
  // Moves `node` to `name` in `newdir`. The caller updates recorded paths (see ChildPath).
  Status Rename(const Node& node, const Node& newdir, const std::string& name);
  Status RenameAt(const Node& olddir, const std::string& oldname, const Node& newdir,
                  const std::string& newname);
  Status UnlinkAt(const Node& dir, const std::string& name, bool remove_dir);
  // Unlinks (or rmdirs) the node itself, found again by its recorded path and checked to be the
  // same object (ESTALE otherwise). The root: EBUSY.
  Status Remove(const Node& node);

  // Extended attributes ("user." only, see the header comment).
  StatusOr<std::string> GetXattr(const Node& node, const std::string& name);
  // NUL-terminated names, as listxattr gives them.
  StatusOr<std::string> ListXattr(const Node& node);
  Status SetXattr(const Node& node, const std::string& name, std::string_view value, int flags);
  Status RemoveXattr(const Node& node, const std::string& name);

  // A reader for an fd opened on a directory (by Open with O_RDONLY|O_DIRECTORY); takes it.
  std::unique_ptr<DirReader> NewDirReader(UniqueFd dir_fd);
  // Appends entries of `dir` from `offset` into `out` while they fit. Qids are computed as for
  // getattr (from d_ino and the directory's device); ".." of the root reports the root.
  // Fails EINVAL when not even the first entry fits.
  Status ReadDir(const Node& dir, DirReader& reader, uint64_t offset, DirentWriter& out);

  // The recorded path of entry `name` in `dir`.
  static std::string ChildPath(const Node& dir, std::string_view name);
  // True for a valid single name (non-empty, no '/', no NUL).
  static bool ValidName(std::string_view name);

  // POSIX record locks on an fd opened by Open/Create, owned by that open file description, so
  // two fids (or two connections) conflict like two processes. Never blocks. Linux: OFD locks.
  // Elsewhere: an in-process LockTable shared by every HostFs of the process (locks are about
  // files, and two exports may share files), invisible to other host processes.
  struct LockRange {
    uint8_t type = kLockUnlock;      // kLockRead, kLockWrite, kLockUnlock
    uint64_t start = 0, length = 0;  // length 0: to the end of file
  };
  // kLockSuccess, or kLockBlocked when another holder conflicts.
  static StatusOr<uint8_t> SetLock(int fd, const LockRange& range);
  // The first conflicting lock, or `range` with type kLockUnlock when none conflicts.
  static StatusOr<LockRange> GetLock(int fd, const LockRange& range);
  // Drops the locks held through `fd`. Call it before closing an fd that SetLock was used on:
  // OFD locks go with the close, but the in-process table cannot see closes.
  static void ReleaseLocks(int fd);

  // Qid for an object of this export.
  Qid QidFor(uint64_t dev, uint64_t ino, uint32_t mode);

 private:
  HostFs(std::string dir, HostFsOptions options, ResolverKind kind,
         std::unique_ptr<internal::Resolver> resolver, std::shared_ptr<Node> root);

  StatusOr<std::shared_ptr<Node>> MakeNode(UniqueFd fd, const struct stat& st, std::string path);
  // The node for entry `name` of directory `dir`, held as `dirfd` (never following a symlink).
  StatusOr<std::shared_ptr<Node>> NodeAt(const Node& dir, int dirfd, const std::string& name);
  // A directory's fd to resolve names in: CheckDir, then HoldFd.
  StatusOr<NodeFdRef> DirFd(const Node& dir, std::string_view what);
  int root_fd() const { return root_fd_->get(); }
  // Opens the object of a node (not a symlink) for I/O with sanitized flags.
  StatusOr<UniqueFd> Reopen(const Node& node, int flags);
  StatusOr<std::shared_ptr<Node>> OpenPath(const std::string& path, int extra_flags);
  // The directory holding `node` (found from the root by recorded path) and its name there,
  // checked to still name the same object.
  struct Parent {
    UniqueFd fd;
    std::string name;
  };
  StatusOr<Parent> FindParent(const Node& node);
  // What a node primitive acts on: the node's fd, or its entry in its parent (FindParent).
  struct Located;
  StatusOr<Located> Locate(const Node& node);
  Status ApplyOwnerAndMode(const Node& node, int open_fd, Owner owner, uint32_t mode);
  Status CheckWritable() const;

  const std::string dir_;
  const HostFsOptions options_;
  const ResolverKind resolver_kind_;
  const bool sets_owner_;
  std::unique_ptr<internal::Resolver> resolver_;
  std::shared_ptr<Node> root_;
  NodeFdRef root_fd_;  // the root node's, open for life
  std::shared_ptr<NodeFdCache> fd_cache_;
  std::mutex dev_mu_;
  std::map<uint64_t, uint64_t> dev_index_;  // st_dev -> small index mixed into qid paths
};

}  // namespace fun::p9
