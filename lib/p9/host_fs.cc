#include "lib/p9/host_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#include "lib/base/log.h"
#include "lib/p9/host_fs_internal.h"

namespace fun::p9 {
namespace {

using internal::kPathFlags;

Status Err(int err, std::string_view what) { return ErrnoError(err, what); }

// A name for a new entry (lcreate, mkdir, symlink, mknod, link).
Status CheckNewName(const std::string& name) {
  if (!HostFs::ValidName(name)) return Err(EINVAL, "invalid name");
  if (name == "." || name == "..") return Err(EEXIST, fmt::format("cannot create \"{}\"", name));
  return OkStatus();
}

// A name of an entry that is renamed or removed.
Status CheckEntryName(const std::string& name) {
  if (!HostFs::ValidName(name) || name == "." || name == "..") {
    return Err(EINVAL, "invalid name");
  }
  return OkStatus();
}

// A directory that names are resolved in. A directory the portable node primitives could not
// open (no read permission) holds no fd: nothing is resolved in it (EACCES, as for search).
Status CheckDir(const Node& dir, std::string_view what) {
  if (!dir.is_dir()) return Err(ENOTDIR, fmt::format("{} a non-directory", what));
  if (!dir.has_fd()) return Err(EACCES, fmt::format("{} an unreadable directory", what));
  return OkStatus();
}

bool IsUserXattr(std::string_view name) { return name.substr(0, 5) == "user."; }

uint32_t ModeFromDirentType(uint8_t type) {
  switch (type) {
    case DT_DIR:
      return S_IFDIR;
    case DT_LNK:
      return S_IFLNK;
    default:
      return S_IFREG;
  }
}

}  // namespace

struct HostFs::Located {
  NodeFdRef fd;   // for a node with an fd
  Parent parent;  // only for a node without one
  internal::Target target(const Node& node) const {
    return internal::Target{.node = node,
                            .fd = fd ? fd->get() : -1,
                            .dirfd = parent.fd.get(),
                            .name = parent.name.c_str()};
  }
};

NodeFdCache::NodeFdCache(size_t max_fds) : max_fds_(std::max<size_t>(max_fds, 1)) {}

std::shared_ptr<NodeFdCache> NodeFdCache::ForProcess() {
  static const std::shared_ptr<NodeFdCache> cache = [] {
    rlimit l{};
    size_t soft = 1024;
    if (::getrlimit(RLIMIT_NOFILE, &l) == 0) {
      soft = l.rlim_cur == RLIM_INFINITY ? size_t{1} << 20 : static_cast<size_t>(l.rlim_cur);
    }
    return std::make_shared<NodeFdCache>(std::max<size_t>(soft / 4, 64));
  }();
  return cache;
}

size_t NodeFdCache::open_fds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

uint64_t NodeFdCache::evictions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evictions_;
}

uint64_t NodeFdCache::reopens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reopens_;
}

Node::Node(UniqueFd fd, std::string path, uint32_t mode, uint64_t dev, uint64_t ino, Qid qid,
           std::shared_ptr<NodeFdCache> cache)
    : has_fd_(fd.get() >= 0),
      cache_(has_fd_ ? std::move(cache) : nullptr),
      path_(std::move(path)),
      type_(mode & S_IFMT),
      dev_(dev),
      ino_(ino),
      qid_(qid) {
  if (!has_fd_) return;
  fd_ = std::make_shared<const UniqueFd>(std::move(fd));
  if (!cache_) return;
  std::vector<NodeFdRef> evicted;
  {
    std::lock_guard<std::mutex> lock(cache_->mu_);
    evicted = InsertLocked();
  }
}

Node::~Node() {
  if (!cache_) return;
  std::lock_guard<std::mutex> lock(cache_->mu_);
  if (in_lru_) cache_->lru_.erase(lru_pos_);
}

std::vector<NodeFdRef> Node::InsertLocked() const {
  std::vector<NodeFdRef> evicted;
  cache_->lru_.push_front(this);
  lru_pos_ = cache_->lru_.begin();
  in_lru_ = true;
  while (cache_->lru_.size() > cache_->max_fds_) {
    const Node* victim = cache_->lru_.back();
    cache_->lru_.pop_back();
    victim->in_lru_ = false;
    evicted.push_back(std::move(victim->fd_));
    victim->fd_ = nullptr;
    ++cache_->evictions_;
  }
  return evicted;
}

bool Node::fd_open() const {
  if (!cache_) return has_fd_;
  std::lock_guard<std::mutex> lock(cache_->mu_);
  return fd_ != nullptr;
}

NodeFdRef Node::HeldFd() const {
  if (!cache_) return fd_;
  std::lock_guard<std::mutex> lock(cache_->mu_);
  if (fd_ && lru_pos_ != cache_->lru_.begin()) {
    cache_->lru_.splice(cache_->lru_.begin(), cache_->lru_, lru_pos_);
  }
  return fd_;
}

NodeFdRef Node::Adopt(UniqueFd fd) const {
  auto ref = std::make_shared<const UniqueFd>(std::move(fd));
  std::vector<NodeFdRef> evicted;  // closed after the lock is let go
  std::lock_guard<std::mutex> lock(cache_->mu_);
  if (fd_) return fd_;  // another thread opened it first; ours closes on return
  fd_ = ref;
  ++cache_->reopens_;
  evicted = InsertLocked();
  return ref;
}

std::string_view ResolverName(ResolverKind kind) {
  switch (kind) {
    case ResolverKind::kAuto:
      return "auto";
    case ResolverKind::kOpenat2:
      return "openat2";
    case ResolverKind::kWalk:
      return "walk";
  }
  return "?";
}

bool HostFs::ValidName(std::string_view name) {
  return !name.empty() && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

std::string HostFs::ChildPath(const Node& dir, std::string_view name) {
  std::string path = dir.path();
  if (!path.empty()) path += '/';
  path += name;
  return path;
}

StatusOr<std::unique_ptr<HostFs>> HostFs::Open(const std::string& dir, HostFsOptions options) {
  ResolverKind kind = options.resolver;
  if (kind == ResolverKind::kAuto) {
    kind = internal::Openat2Supported() ? ResolverKind::kOpenat2 : ResolverKind::kWalk;
  }
  std::unique_ptr<internal::Resolver> resolver;
  if (kind == ResolverKind::kOpenat2) {
    if (!internal::Openat2Supported()) {
      return UnimplementedError("openat2 is not available on this kernel (needs Linux 5.6)");
    }
    resolver = internal::NewOpenat2Resolver();
  } else {
    resolver = internal::NewWalkResolver();
  }
  // The export's own path is trusted configuration: symlinks in it are followed (macOS /tmp).
  UniqueFd fd(::open(dir.c_str(), kPathFlags | O_DIRECTORY));
  if (!fd) return ErrnoError(errno, fmt::format("opening export {}", dir));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, fmt::format("stat {}", dir));
  if (!S_ISDIR(st.st_mode)) return Err(ENOTDIR, fmt::format("export {}", dir));
  Qid qid{.type = kQidDir, .version = 0, .path = static_cast<uint64_t>(st.st_ino)};
  auto root = std::make_shared<Node>(std::move(fd), "", st.st_mode, st.st_dev, st.st_ino, qid);
  return std::unique_ptr<HostFs>(
      new HostFs(dir, options, kind, std::move(resolver), std::move(root)));
}

HostFs::HostFs(std::string dir, HostFsOptions options, ResolverKind kind,
               std::unique_ptr<internal::Resolver> resolver, std::shared_ptr<Node> root)
    : dir_(std::move(dir)),
      options_(options),
      resolver_kind_(kind),
      sets_owner_(options.owner == OwnerPolicy::kClientIds ||
                  (options.owner == OwnerPolicy::kAuto && ::geteuid() == 0)),
      resolver_(std::move(resolver)),
      root_(std::move(root)),
      root_fd_(root_->HeldFd()),
      fd_cache_(options_.fd_cache ? options_.fd_cache : NodeFdCache::ForProcess()) {}

HostFs::~HostFs() = default;

Status HostFs::CheckWritable() const {
  if (options_.read_only) return Err(EROFS, "read-only export");
  return OkStatus();
}

Qid HostFs::QidFor(uint64_t dev, uint64_t ino, uint32_t mode) {
  Qid q;
  if (S_ISDIR(mode)) {
    q.type = kQidDir;
  } else if (S_ISLNK(mode)) {
    q.type = kQidSymlink;
  }
  uint64_t index = 0;
  if (dev != root_->dev()) {
    // Another file system mounted inside the export: keep its inode numbers apart from ours.
    std::lock_guard<std::mutex> lock(dev_mu_);
    auto [it, inserted] = dev_index_.emplace(dev, dev_index_.size() + 1);
    index = it->second;
  }
  q.path = ino ^ (index << 48);
  return q;
}

StatusOr<std::shared_ptr<Node>> HostFs::MakeNode(UniqueFd fd, const struct stat& st,
                                                 std::string path) {
  Qid qid = QidFor(st.st_dev, st.st_ino, st.st_mode);
  return std::make_shared<Node>(std::move(fd), std::move(path), st.st_mode, st.st_dev, st.st_ino,
                                qid, fd_cache_);
}

StatusOr<NodeFdRef> HostFs::HoldFd(const Node& node) {
  if (NodeFdRef fd = node.HeldFd()) return fd;
  if (!node.has_fd()) return Err(EBADF, "a node without an fd");
  // Evicted: open it again by its recorded path and make sure it is still the same object.
  FUN_ASSIGN_OR_RETURN(
      UniqueFd fd, internal::ReopenNodeBeneath(*resolver_, root_fd(), node.path(), node.type()));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat");
  if (st.st_dev != node.dev() || st.st_ino != node.ino()) {
    return Err(ESTALE, "the file was moved or replaced on the host");
  }
  return node.Adopt(std::move(fd));
}

StatusOr<NodeFdRef> HostFs::DirFd(const Node& dir, std::string_view what) {
  FUN_RETURN_IF_ERROR(CheckDir(dir, what));
  return HoldFd(dir);
}

StatusOr<std::shared_ptr<Node>> HostFs::NodeAt(const Node& dir, int dirfd,
                                               const std::string& name) {
  FUN_ASSIGN_OR_RETURN(internal::NodeFd n, internal::OpenNode(*resolver_, dirfd, name));
  return MakeNode(std::move(n.fd), n.st, ChildPath(dir, name));
}

StatusOr<std::shared_ptr<Node>> HostFs::OpenPath(const std::string& path, int extra_flags) {
  if (path.empty()) return root_;
  FUN_ASSIGN_OR_RETURN(
      UniqueFd fd, resolver_->OpenBeneath(root_fd(), path, kPathFlags | O_NOFOLLOW | extra_flags));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat");
  return MakeNode(std::move(fd), st, path);
}

StatusOr<std::shared_ptr<Node>> HostFs::Root() { return root_; }

StatusOr<std::shared_ptr<Node>> HostFs::Walk(const std::shared_ptr<Node>& dir,
                                             const std::string& name) {
  if (!ValidName(name)) return Err(EINVAL, "invalid name");
  FUN_RETURN_IF_ERROR(CheckDir(*dir, "walk from"));
  if (name == ".") return dir;
  if (name == "..") {
    // Never openat(fd, ".."): resolve the recorded parent path from the root instead, so a
    // directory moved elsewhere cannot lead out of the export. ".." of the root is the root.
    std::string path = dir->path();
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return root_;
    return OpenPath(path.substr(0, slash), O_DIRECTORY);
  }
  FUN_ASSIGN_OR_RETURN(NodeFdRef dirfd, HoldFd(*dir));
  return NodeAt(*dir, dirfd->get(), name);
}

StatusOr<Attr> HostFs::GetAttr(const Node& node) {
  Attr a;
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  FUN_RETURN_IF_ERROR(internal::StatNode(at.target(node), &a));
  a.qid = QidFor(a.dev, a.ino, a.mode);
  return a;
}

StatusOr<UniqueFd> HostFs::Reopen(const Node& node, int flags) {
  if (node.is_dir() && node.has_fd()) {
    // "." of the directory's own fd is the directory itself: no path, no /proc needed.
    FUN_ASSIGN_OR_RETURN(NodeFdRef dirfd, HoldFd(node));
    int fd = ::openat(dirfd->get(), ".", flags | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoError(errno, "open directory");
    return UniqueFd(fd);
  }
  if (resolver_->reopen_by_fd() && node.has_fd()) {
    FUN_ASSIGN_OR_RETURN(NodeFdRef node_fd, HoldFd(node));
    auto fd = internal::ReopenNode(node_fd->get(), flags);
    if (fd.ok() || fd.status().code() != Code::kUnimplemented) return fd;
  }
  // By recorded path, then make sure it is still the same object.
  FUN_ASSIGN_OR_RETURN(UniqueFd fd,
                       resolver_->OpenBeneath(root_fd(), node.path(), flags | O_NOFOLLOW));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat");
  if (st.st_dev != node.dev() || st.st_ino != node.ino()) {
    return Err(ESTALE, "the file was moved or replaced on the host");
  }
  return fd;
}

StatusOr<UniqueFd> HostFs::Open(const Node& node, int flags) {
  switch (node.type()) {
    case S_IFLNK:
      return Err(ELOOP, "open a symlink");
    case S_IFSOCK:
      return Err(ENXIO, "open a socket");
    case S_IFCHR:
    case S_IFBLK:
      return Err(EPERM, "device nodes are not opened");
    default:
      break;
  }
  int acc = flags & O_ACCMODE;
  bool writes = acc != O_RDONLY || (flags & O_TRUNC) != 0;
  if (writes) FUN_RETURN_IF_ERROR(CheckWritable());
  if (node.is_dir() && writes) return Err(EISDIR, "open a directory for writing");
  flags &= ~(O_CREAT | O_EXCL | O_NOFOLLOW);
  flags |= O_CLOEXEC | O_NOCTTY;
  // A FIFO with no peer would block a worker forever.
  if (node.type() == S_IFIFO) flags |= O_NONBLOCK;
  return Reopen(node, flags);
}

Status HostFs::ApplyOwnerAndMode(const Node& node, int open_fd, Owner owner, uint32_t mode) {
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  if (sets_owner_ && (owner.uid != kNoUid || owner.gid != kNoUid)) {
    Status s = internal::ChownNode(at.target(node), owner.uid, owner.gid);
    if (!s.ok()) FUN_LOG(Debug, "9p: chown {} to {}:{}: {}", node.path(), owner.uid, owner.gid, s);
  }
  if (node.is_symlink()) return OkStatus();
  // Undo the process umask (and the set-id bits chown cleared): the client already applied its
  // own umask to `mode`.
  Attr a;
  int fd = open_fd >= 0 ? open_fd : at.target(node).fd;
  if (fd >= 0) {
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoError(errno, "fstat");
    a.mode = st.st_mode;
  } else {
    FUN_RETURN_IF_ERROR(internal::StatNode(at.target(node), &a));
  }
  if ((a.mode & 07777) != (mode & 07777)) {
    Status s = open_fd >= 0 && ::fchmod(open_fd, mode & 07777) == 0
                   ? OkStatus()
                   : internal::ChmodNode(at.target(node), mode & 07777);
    if (!s.ok()) FUN_LOG(Debug, "9p: chmod {} {:o}: {}", node.path(), mode & 07777, s);
  }
  return OkStatus();
}

StatusOr<HostFs::Created> HostFs::Create(const Node& dir, const std::string& name, int flags,
                                         uint32_t mode, Owner owner) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_RETURN_IF_ERROR(CheckNewName(name));
  FUN_ASSIGN_OR_RETURN(NodeFdRef dirfd, DirFd(dir, "create in"));
  bool excl = (flags & O_EXCL) != 0;
  bool nonblock = (flags & O_NONBLOCK) != 0;
  flags &= ~(O_CREAT | O_EXCL | O_NOFOLLOW | O_DIRECTORY);
  // O_EXCL first: an existing entry (perhaps a FIFO or device that must not be opened
  // blindly) goes through Open's checks instead. O_NOFOLLOW: never create through a symlink.
  auto created = resolver_->OpenAt(dirfd->get(), name,
                                   flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK,
                                   mode & 07777);
  if (!created.ok()) {
    if (created.status().sys_errno() != EEXIST || excl) return created.status();
    FUN_ASSIGN_OR_RETURN(std::shared_ptr<Node> node, NodeAt(dir, dirfd->get(), name));
    FUN_ASSIGN_OR_RETURN(UniqueFd fd, Open(*node, flags | (nonblock ? O_NONBLOCK : 0)));
    return Created{std::move(node), std::move(fd)};
  }
  UniqueFd fd = std::move(created).value();
  if (!nonblock) {
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl >= 0) ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  }
  FUN_ASSIGN_OR_RETURN(std::shared_ptr<Node> node, NodeAt(dir, dirfd->get(), name));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "fstat");
  if (st.st_dev != node->dev() || st.st_ino != node->ino()) {
    return Err(ESTALE, "the new file was replaced on the host");
  }
  FUN_RETURN_IF_ERROR(ApplyOwnerAndMode(*node, fd.get(), owner, mode));
  return Created{std::move(node), std::move(fd)};
}

StatusOr<std::shared_ptr<Node>> HostFs::Mkdir(const Node& dir, const std::string& name,
                                              uint32_t mode, Owner owner) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_RETURN_IF_ERROR(CheckNewName(name));
  FUN_ASSIGN_OR_RETURN(NodeFdRef dirfd, DirFd(dir, "mkdir in"));
  if (::mkdirat(dirfd->get(), name.c_str(), mode & 07777) != 0) return ErrnoError(errno, "mkdir");
  FUN_ASSIGN_OR_RETURN(std::shared_ptr<Node> node, NodeAt(dir, dirfd->get(), name));
  if (!node->is_dir()) return Err(ESTALE, "the new directory was replaced on the host");
  FUN_RETURN_IF_ERROR(ApplyOwnerAndMode(*node, -1, owner, mode));
  return node;
}

StatusOr<std::shared_ptr<Node>> HostFs::Symlink(const Node& dir, const std::string& name,
                                                const std::string& target, Owner owner) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_RETURN_IF_ERROR(CheckNewName(name));
  FUN_ASSIGN_OR_RETURN(NodeFdRef dirfd, DirFd(dir, "symlink in"));
  if (target.empty()) return Err(ENOENT, "empty symlink target");
  if (target.find('\0') != std::string::npos) return Err(EINVAL, "NUL in symlink target");
  // The target is stored, never resolved by the server.
  if (::symlinkat(target.c_str(), dirfd->get(), name.c_str()) != 0) {
    return ErrnoError(errno, "symlink");
  }
  FUN_ASSIGN_OR_RETURN(std::shared_ptr<Node> node, NodeAt(dir, dirfd->get(), name));
  if (!node->is_symlink()) return Err(ESTALE, "the new symlink was replaced on the host");
  FUN_RETURN_IF_ERROR(ApplyOwnerAndMode(*node, -1, owner, 0777));
  return node;
}

StatusOr<std::shared_ptr<Node>> HostFs::Mknod(const Node& dir, const std::string& name,
                                              uint32_t mode, Owner owner) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_RETURN_IF_ERROR(CheckNewName(name));
  FUN_ASSIGN_OR_RETURN(NodeFdRef dirfd, DirFd(dir, "mknod in"));
  uint32_t type = mode & S_IFMT;
  if (type == 0) type = S_IFREG;
  switch (type) {
    case S_IFREG:
    case S_IFIFO:
    case S_IFSOCK:
      break;
    case S_IFCHR:
    case S_IFBLK:
      return Err(EPERM, "device nodes are not created in shared folders");
    default:
      return Err(EINVAL, "mknod of an unknown file type");
  }
  if (::mknodat(dirfd->get(), name.c_str(), type | (mode & 07777), 0) != 0) {
    return ErrnoError(errno, "mknod");
  }
  FUN_ASSIGN_OR_RETURN(std::shared_ptr<Node> node, NodeAt(dir, dirfd->get(), name));
  if (node->type() != type) return Err(ESTALE, "the new node was replaced on the host");
  FUN_RETURN_IF_ERROR(ApplyOwnerAndMode(*node, -1, owner, mode));
  return node;
}

StatusOr<HostFs::Parent> HostFs::FindParent(const Node& node) {
  std::string path = node.path();
  if (path.empty()) return Err(EBUSY, "the export root");
  size_t slash = path.rfind('/');
  std::string parent_path = slash == std::string::npos ? std::string() : path.substr(0, slash);
  Parent p;
  p.name = slash == std::string::npos ? path : path.substr(slash + 1);
  FUN_ASSIGN_OR_RETURN(
      p.fd, resolver_->OpenBeneath(root_fd(), parent_path, kPathFlags | O_DIRECTORY | O_NOFOLLOW));
  struct stat st;
  if (::fstatat(p.fd.get(), p.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoError(errno, "stat");
  }
  if (st.st_dev != node.dev() || st.st_ino != node.ino()) {
    return Err(ESTALE, "the file was moved or replaced on the host");
  }
  return p;
}

StatusOr<HostFs::Located> HostFs::Locate(const Node& node) {
  Located at;
  if (node.has_fd()) {
    FUN_ASSIGN_OR_RETURN(at.fd, HoldFd(node));
  } else {
    FUN_ASSIGN_OR_RETURN(at.parent, FindParent(node));
  }
  return at;
}

Status HostFs::Link(const Node& target, const Node& dir, const std::string& name) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_RETURN_IF_ERROR(CheckNewName(name));
  FUN_ASSIGN_OR_RETURN(NodeFdRef dirfd, DirFd(dir, "link in"));
  if (target.is_dir()) return Err(EPERM, "hard link to a directory");
  if (resolver_->reopen_by_fd() && target.has_fd()) {
    FUN_ASSIGN_OR_RETURN(NodeFdRef target_fd, HoldFd(target));
    Status s = internal::LinkNode(target_fd->get(), dirfd->get(), name);
    if (s.code() != Code::kUnimplemented) return s;
  }
  FUN_ASSIGN_OR_RETURN(Parent p, FindParent(target));
  if (::linkat(p.fd.get(), p.name.c_str(), dirfd->get(), name.c_str(), 0) != 0) {
    return ErrnoError(errno, "link");
  }
  return OkStatus();
}

Status HostFs::Rename(const Node& node, const Node& newdir, const std::string& name) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_RETURN_IF_ERROR(CheckEntryName(name));
  FUN_ASSIGN_OR_RETURN(NodeFdRef newdirfd, DirFd(newdir, "rename into"));
  FUN_ASSIGN_OR_RETURN(Parent p, FindParent(node));
  if (::renameat(p.fd.get(), p.name.c_str(), newdirfd->get(), name.c_str()) != 0) {
    return ErrnoError(errno, "rename");
  }
  return OkStatus();
}

Status HostFs::RenameAt(const Node& olddir, const std::string& oldname, const Node& newdir,
                        const std::string& newname) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_RETURN_IF_ERROR(CheckEntryName(oldname));
  FUN_RETURN_IF_ERROR(CheckEntryName(newname));
  FUN_ASSIGN_OR_RETURN(NodeFdRef olddirfd, DirFd(olddir, "rename from"));
  FUN_ASSIGN_OR_RETURN(NodeFdRef newdirfd, DirFd(newdir, "rename into"));
  if (::renameat(olddirfd->get(), oldname.c_str(), newdirfd->get(), newname.c_str()) != 0) {
    return ErrnoError(errno, "rename");
  }
  return OkStatus();
}

Status HostFs::UnlinkAt(const Node& dir, const std::string& name, bool remove_dir) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_RETURN_IF_ERROR(CheckEntryName(name));
  FUN_ASSIGN_OR_RETURN(NodeFdRef dirfd, DirFd(dir, "unlink in"));
  if (::unlinkat(dirfd->get(), name.c_str(), remove_dir ? AT_REMOVEDIR : 0) != 0) {
    return ErrnoError(errno, remove_dir ? "rmdir" : "unlink");
  }
  return OkStatus();
}

Status HostFs::Remove(const Node& node) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_ASSIGN_OR_RETURN(Parent p, FindParent(node));
  if (::unlinkat(p.fd.get(), p.name.c_str(), node.is_dir() ? AT_REMOVEDIR : 0) != 0) {
    return ErrnoError(errno, "remove");
  }
  return OkStatus();
}

Status HostFs::SetAttr(const Node& node, const SetAttrRequest& req) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  if ((req.uid || req.gid) && sets_owner_) {
    FUN_RETURN_IF_ERROR(
        internal::ChownNode(at.target(node), req.uid.value_or(kNoUid), req.gid.value_or(kNoUid)));
  }
  if (req.mode) {
    if (node.is_symlink()) return Err(EOPNOTSUPP, "chmod of a symlink");
    FUN_RETURN_IF_ERROR(internal::ChmodNode(at.target(node), *req.mode & 07777));
  }
  if (req.size) {
    if (node.is_dir()) return Err(EISDIR, "truncate a directory");
    if (!node.is_regular()) return Err(EINVAL, "truncate a non-regular file");
    if (*req.size > static_cast<uint64_t>(INT64_MAX)) return Err(EFBIG, "truncate");
    FUN_ASSIGN_OR_RETURN(UniqueFd fd, Reopen(node, O_WRONLY | O_NOCTTY));
    if (::ftruncate(fd.get(), static_cast<off_t>(*req.size)) != 0) {
      return ErrnoError(errno, "truncate");
    }
  }
  if (req.atime.tv_nsec != UTIME_OMIT || req.mtime.tv_nsec != UTIME_OMIT) {
    const timespec times[2] = {req.atime, req.mtime};
    FUN_RETURN_IF_ERROR(internal::UtimensNode(at.target(node), times));
  }
  return OkStatus();
}

StatusOr<FsStat> HostFs::StatFs(const Node& node) {
  FsStat s;
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  FUN_RETURN_IF_ERROR(internal::StatFsNode(at.target(node), &s));
  return s;
}

StatusOr<std::string> HostFs::ReadLink(const Node& node) {
  if (!node.is_symlink()) return Err(EINVAL, "readlink of a non-symlink");
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  return internal::ReadLinkNode(at.target(node));
}

StatusOr<std::string> HostFs::GetXattr(const Node& node, const std::string& name) {
  if (!IsUserXattr(name) || node.is_symlink()) return Err(ENODATA, "getxattr");
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  return internal::GetXattrNode(at.target(node), name);
}

StatusOr<std::string> HostFs::ListXattr(const Node& node) {
  if (node.is_symlink()) return std::string();
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  FUN_ASSIGN_OR_RETURN(std::string all, internal::ListXattrNode(at.target(node)));
  std::string out;
  size_t pos = 0;
  while (pos < all.size()) {
    size_t end = all.find('\0', pos);
    if (end == std::string::npos) end = all.size();
    std::string_view name(all.data() + pos, end - pos);
    if (IsUserXattr(name)) {
      out.append(name);
      out.push_back('\0');
    }
    pos = end + 1;
  }
  return out;
}

Status HostFs::SetXattr(const Node& node, const std::string& name, std::string_view value,
                        int flags) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  if (!IsUserXattr(name) || node.is_symlink()) return Err(EOPNOTSUPP, "setxattr");
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  return internal::SetXattrNode(at.target(node), name, value, flags);
}

Status HostFs::RemoveXattr(const Node& node, const std::string& name) {
  FUN_RETURN_IF_ERROR(CheckWritable());
  if (!IsUserXattr(name) || node.is_symlink()) return Err(EOPNOTSUPP, "removexattr");
  FUN_ASSIGN_OR_RETURN(Located at, Locate(node));
  return internal::RemoveXattrNode(at.target(node), name);
}

std::unique_ptr<DirReader> HostFs::NewDirReader(UniqueFd dir_fd) {
  return resolver_->NewDirReader(std::move(dir_fd));
}

Status HostFs::ReadDir(const Node& dir, DirReader& reader, uint64_t offset, DirentWriter& out) {
  if (offset != reader.position()) FUN_RETURN_IF_ERROR(reader.Seek(offset));
  bool root = dir.path().empty();
  bool any = false;
  DirReader::Entry e;
  while (true) {
    FUN_ASSIGN_OR_RETURN(bool have, reader.Peek(&e));
    if (!have) break;
    Qid qid =
        root && e.name == ".." ? dir.qid() : QidFor(dir.dev(), e.ino, ModeFromDirentType(e.type));
    if (!out.Add(qid, e.next_offset, e.type, e.name)) {
      if (!any) return Err(EINVAL, "readdir count too small for the next entry");
      break;
    }
    any = true;
    reader.Consume();
  }
  return OkStatus();
}

StatusOr<uint8_t> HostFs::SetLock(int fd, const LockRange& range) {
  return internal::SetLockFd(fd, range);
}

StatusOr<HostFs::LockRange> HostFs::GetLock(int fd, const LockRange& range) {
  return internal::GetLockFd(fd, range);
}

void HostFs::ReleaseLocks(int fd) { internal::ReleaseLocksFd(fd); }

}  // namespace fun::p9
