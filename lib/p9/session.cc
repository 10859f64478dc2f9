// Session: the per-connection protocol state and one handler per 9P2000.L request.

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_set>
#include <utility>

#include "lib/base/log.h"
#include "lib/p9/errno_map.h"
#include "lib/p9/server.h"

namespace fun::p9 {
namespace internal {

struct Fid {
  enum class Kind { kNode, kXattrRead, kXattrWrite };

  Fid(const Export* e, std::shared_ptr<Node> n, uint32_t u, Kind k = Kind::kNode)
      : exp(e), node(std::move(n)), uid(u), kind(k) {}
  ~Fid() {
    int fd = open_fd.load();
    if (fd >= 0) {
      HostFs::ReleaseLocks(fd);  // before the fd number can be reused
      ::close(fd);
    }
  }

  const Export* const exp;
  const std::shared_ptr<Node> node;
  const uint32_t uid;  // n_uname of the attach, kNoUid when not given
  const Kind kind;
  // Set once by Tlopen/Tlcreate, then read without the lock; closed by the destructor (when
  // the last request using the fid has finished).
  std::atomic<int> open_fd{-1};

  std::mutex mu;                   // guards the fields below
  std::unique_ptr<DirReader> dir;  // created by the first Treaddir
  std::string xattr_name;          // kXattrWrite
  std::string xattr_value;         // kXattrRead: the value; kXattrWrite: what was written
  uint64_t xattr_size = 0;         // kXattrWrite: the size announced by Txattrcreate
  int xattr_flags = 0;             // kXattrWrite
};

}  // namespace internal

namespace {

using internal::Fid;
namespace le = linux_errno;

Status Err(int err, std::string_view what) { return ErrnoError(err, what); }

template <typename R>
Status Reply(uint16_t tag, R r, std::string* out) {
  return Encode(tag, Message(std::move(r)), out);
}

// 9P2000.L open flags (the Linux x86 values, whatever the client's or our architecture).
constexpr uint32_t kDotlAccMode = 3, kDotlWronly = 1, kDotlRdwr = 2, kDotlExcl = 0200,
                   kDotlTrunc = 01000, kDotlAppend = 02000, kDotlNonblock = 04000,
                   kDotlDsync = 010000, kDotlDirectory = 0200000, kDotlSync = 04000000;

// Host open flags for a Tlopen/Tlcreate. Dropped on purpose: O_DIRECT (our buffers are not
// aligned), O_NOATIME (EPERM when not the owner), FASYNC, O_LARGEFILE, O_CLOEXEC, O_NOFOLLOW
// (symlinks are never opened anyway), O_CREAT (only Tlcreate creates).
StatusOr<int> HostOpenFlags(uint32_t dotl) {
  int flags;
  switch (dotl & kDotlAccMode) {
    case 0:
      flags = O_RDONLY;
      break;
    case kDotlWronly:
      flags = O_WRONLY;
      break;
    case kDotlRdwr:
      flags = O_RDWR;
      break;
    default:
      return Err(EINVAL, "open access mode 3");
  }
  if (dotl & kDotlTrunc) flags |= O_TRUNC;
  if (dotl & kDotlAppend) flags |= O_APPEND;
  if (dotl & kDotlNonblock) flags |= O_NONBLOCK;
  if (dotl & kDotlDsync) flags |= O_DSYNC;
  if (dotl & kDotlSync) flags |= O_SYNC;
  if (dotl & kDotlDirectory) flags |= O_DIRECTORY;
  if (dotl & kDotlExcl) flags |= O_EXCL;
  return flags;
}

uint32_t XattrFlagsToHost(uint32_t flags) {
  // Linux XATTR_CREATE 1, XATTR_REPLACE 2 (the same numbers on macOS).
  uint32_t out = 0;
  if (flags & 1) out |= XATTR_CREATE;
  if (flags & 2) out |= XATTR_REPLACE;
  return out;
}

constexpr uint64_t kMaxXattrSize = 65536;  // Linux XATTR_SIZE_MAX

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

}  // namespace

Session::Session(std::shared_ptr<internal::ServerState> state)
    : state_(std::move(state)), msize_(state_->options.max_msize) {}

Session::~Session() = default;

size_t Session::fid_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fids_.size();
}

StatusOr<Session::FidPtr> Session::GetFid(uint32_t fid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = fids_.find(fid);
  if (it == fids_.end()) return Err(EBADF, fmt::format("unknown fid {}", fid));
  return it->second;
}

StatusOr<Session::FidPtr> Session::GetNodeFid(uint32_t fid) const {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetFid(fid));
  if (f->kind != Fid::Kind::kNode) return Err(EBADF, fmt::format("fid {} is an xattr fid", fid));
  return f;
}

Status Session::InsertFid(uint32_t fid, FidPtr f) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!fids_.emplace(fid, std::move(f)).second) {
    return Err(EINVAL, fmt::format("fid {} is in use", fid));
  }
  return OkStatus();
}

void Session::ReplaceFid(uint32_t fid, FidPtr f) {
  FidPtr old;
  std::lock_guard<std::mutex> lock(mu_);
  FidPtr& slot = fids_[fid];
  old = std::move(slot);  // destroyed after the lock is released (it may close an fd)
  slot = std::move(f);
}

Session::FidPtr Session::TakeFid(uint32_t fid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = fids_.find(fid);
  if (it == fids_.end()) return nullptr;
  FidPtr f = std::move(it->second);
  fids_.erase(it);
  return f;
}

void Session::RewritePaths(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unordered_set<Node*> done;
  for (auto& [num, fid] : fids_) {
    Node* node = fid->node.get();
    if (!done.insert(node).second) continue;
    std::string p = node->path();
    if (p == from) {
      node->set_path(to);
    } else if (p.size() > from.size() && StartsWith(p, from) && p[from.size()] == '/') {
      node->set_path(to + p.substr(from.size()));
    }
  }
}

const internal::Export* Session::FindExport(const std::string& aname) const {
  const auto& exports = state_->exports;
  if (aname.empty()) return exports.size() == 1 ? &exports[0] : nullptr;
  for (const auto& e : exports) {
    if (e.name == aname) return &e;
  }
  std::string trimmed = aname;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  for (const auto& e : exports) {
    if (e.dir == trimmed || e.real_dir == trimmed) return &e;
  }
  return nullptr;
}

std::string Session::HandleMessage(const Frame& frame) {
  std::string out;
  HandleMessage(frame, &out);
  return out;
}

void Session::HandleMessage(const Frame& frame, std::string* out) {
  state_->requests.fetch_add(1, std::memory_order_relaxed);
  // Handlers append; Tread and Treaddir size the buffer themselves (keeping its capacity).
  if (!std::holds_alternative<Tread>(frame.msg) && !std::holds_alternative<Treaddir>(frame.msg)) {
    out->clear();
  }
  Status s = Dispatch(frame, out);
  if (!s.ok()) {
    state_->errors.fetch_add(1, std::memory_order_relaxed);
    out->clear();
    uint32_t ecode = LinuxErrnoFromStatus(s);
    FUN_LOG(Debug, "9p: {} (tag {}) -> Rlerror {}: {}",
            MsgTypeName(static_cast<uint8_t>(TypeOf(frame.msg))), frame.tag, ecode, s.message());
    Encode(frame.tag, Rlerror{.ecode = ecode}, out).IgnoreError();
  }
}

// Anything that is not a request (R messages, Tlerror).
template <typename M>
Status Session::Handle(uint16_t, const M&, std::string*) {
  return Err(EOPNOTSUPP, "not a request");
}

template <>
Status Session::Handle(uint16_t tag, const Tversion& m, std::string* out) {
  if (!StartsWith(m.version, kVersion9P2000L)) {
    return Reply(tag, Rversion{.msize = msize(), .version = "unknown"}, out);
  }
  if (m.msize < kMinMsize) {
    return Err(EINVAL, fmt::format("msize {} is below {}", m.msize, kMinMsize));
  }
  uint32_t msize = std::min(m.msize, state_->options.max_msize);
  std::unordered_map<uint32_t, FidPtr> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    old.swap(fids_);
  }
  old.clear();
  msize_.store(msize);
  versioned_.store(true);
  return Reply(tag, Rversion{.msize = msize, .version = std::string(kVersion9P2000L)}, out);
}

template <>
Status Session::Handle(uint16_t, const Tauth&, std::string*) {
  // ENOENT: what diod's client library (diodcat, diodload) takes for "no authentication
  // required"; any other error fails its mount. The Linux client never sends Tauth.
  return Err(ENOENT, "no authentication required");
}

template <>
Status Session::Handle(uint16_t tag, const Tattach& m, std::string* out) {
  const internal::Export* e = FindExport(m.aname);
  if (e == nullptr) return Err(ENOENT, fmt::format("no export named \"{}\"", m.aname));
  FUN_ASSIGN_OR_RETURN(std::shared_ptr<Node> root, e->fs->Root());
  Qid qid = root->qid();
  FUN_RETURN_IF_ERROR(InsertFid(m.fid, std::make_shared<Fid>(e, std::move(root), m.n_uname)));
  return Reply(tag, Rattach{.qid = qid}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tflush&, std::string* out) {
  return Reply(tag, Rflush{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Twalk& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  if (m.newfid != m.fid) {
    std::lock_guard<std::mutex> lock(mu_);
    if (fids_.count(m.newfid)) return Err(EINVAL, fmt::format("fid {} is in use", m.newfid));
  }
  Rwalk r;
  std::shared_ptr<Node> node = f->node;
  for (const std::string& name : m.wnames) {
    auto next = f->exp->fs->Walk(node, name);
    if (!next.ok()) {
      if (r.wqids.empty()) return next.status();
      return Reply(tag, std::move(r), out);  // partial: newfid is not created
    }
    node = std::move(next).value();
    r.wqids.push_back(node->qid());
  }
  auto nf = std::make_shared<Fid>(f->exp, std::move(node), f->uid);
  if (m.newfid == m.fid) {
    ReplaceFid(m.fid, std::move(nf));
  } else {
    FUN_RETURN_IF_ERROR(InsertFid(m.newfid, std::move(nf)));
  }
  return Reply(tag, std::move(r), out);
}

template <>
Status Session::Handle(uint16_t tag, const Tgetattr& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  FUN_ASSIGN_OR_RETURN(Attr a, f->exp->fs->GetAttr(*f->node));
  Rgetattr r;
  r.valid = kGetattrBasic | (a.has_btime ? kGetattrBtime : 0);
  r.qid = a.qid;
  r.mode = a.mode;
  r.uid = a.uid;
  r.gid = a.gid;
  r.nlink = a.nlink;
  r.rdev = a.rdev;
  r.size = a.size;
  r.blksize = a.blksize;
  r.blocks = a.blocks;
  r.atime_sec = static_cast<uint64_t>(a.atime.tv_sec);
  r.atime_nsec = static_cast<uint64_t>(a.atime.tv_nsec);
  r.mtime_sec = static_cast<uint64_t>(a.mtime.tv_sec);
  r.mtime_nsec = static_cast<uint64_t>(a.mtime.tv_nsec);
  r.ctime_sec = static_cast<uint64_t>(a.ctime.tv_sec);
  r.ctime_nsec = static_cast<uint64_t>(a.ctime.tv_nsec);
  r.btime_sec = static_cast<uint64_t>(a.btime.tv_sec);
  r.btime_nsec = static_cast<uint64_t>(a.btime.tv_nsec);
  return Reply(tag, r, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tsetattr& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  if (m.valid == 0) return Reply(tag, Rsetattr{}, out);
  SetAttrRequest req;
  if (m.valid & kSetattrMode) req.mode = m.mode & 07777;
  if (m.valid & kSetattrUid) req.uid = m.uid;
  if (m.valid & kSetattrGid) req.gid = m.gid;
  if (m.valid & kSetattrSize) req.size = m.size;
  auto time = [](bool set, bool given, uint64_t sec, uint64_t nsec) -> StatusOr<timespec> {
    if (!set) return timespec{0, UTIME_OMIT};
    if (!given) return timespec{0, UTIME_NOW};
    if (nsec >= 1000000000ull || sec > static_cast<uint64_t>(INT64_MAX)) {
      return Err(EINVAL, "setattr time");
    }
    return timespec{static_cast<time_t>(sec), static_cast<long>(nsec)};
  };
  FUN_ASSIGN_OR_RETURN(req.atime, time(m.valid & kSetattrAtime, m.valid & kSetattrAtimeSet,
                                       m.atime_sec, m.atime_nsec));
  FUN_ASSIGN_OR_RETURN(req.mtime, time(m.valid & kSetattrMtime, m.valid & kSetattrMtimeSet,
                                       m.mtime_sec, m.mtime_nsec));
  FUN_RETURN_IF_ERROR(f->exp->fs->SetAttr(*f->node, req));
  return Reply(tag, Rsetattr{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tlopen& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  if (f->open_fd.load() >= 0) return Err(EINVAL, "fid is already open");
  FUN_ASSIGN_OR_RETURN(int flags, HostOpenFlags(m.flags));
  flags &= ~O_EXCL;
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, f->exp->fs->Open(*f->node, flags));
  int expected = -1;
  if (!f->open_fd.compare_exchange_strong(expected, fd.get())) {
    return Err(EINVAL, "fid is already open");
  }
  fd.release();
  return Reply(tag, Rlopen{.qid = f->node->qid(), .iounit = iounit()}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tlcreate& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  if (f->open_fd.load() >= 0) return Err(EINVAL, "fid is already open");
  FUN_ASSIGN_OR_RETURN(int flags, HostOpenFlags(m.flags));
  FUN_ASSIGN_OR_RETURN(HostFs::Created c, f->exp->fs->Create(*f->node, m.name, flags, m.mode,
                                                             Owner{.uid = f->uid, .gid = m.gid}));
  Qid qid = c.node->qid();
  auto nf = std::make_shared<Fid>(f->exp, std::move(c.node), f->uid);
  nf->open_fd.store(c.fd.release());
  ReplaceFid(m.fid, std::move(nf));  // the fid now stands for the new, open file
  return Reply(tag, Rlcreate{.qid = qid, .iounit = iounit()}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tsymlink& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  FUN_ASSIGN_OR_RETURN(
      std::shared_ptr<Node> n,
      f->exp->fs->Symlink(*f->node, m.name, m.symtgt, Owner{.uid = f->uid, .gid = m.gid}));
  return Reply(tag, Rsymlink{.qid = n->qid()}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tmknod& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.dfid));
  FUN_ASSIGN_OR_RETURN(
      std::shared_ptr<Node> n,
      f->exp->fs->Mknod(*f->node, m.name, m.mode, Owner{.uid = f->uid, .gid = m.gid}));
  return Reply(tag, Rmknod{.qid = n->qid()}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tmkdir& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.dfid));
  FUN_ASSIGN_OR_RETURN(
      std::shared_ptr<Node> n,
      f->exp->fs->Mkdir(*f->node, m.name, m.mode, Owner{.uid = f->uid, .gid = m.gid}));
  return Reply(tag, Rmkdir{.qid = n->qid()}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Trename& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  FUN_ASSIGN_OR_RETURN(FidPtr d, GetNodeFid(m.dfid));
  if (f->exp != d->exp) return Err(EXDEV, "rename across exports");
  std::string from = f->node->path();
  FUN_RETURN_IF_ERROR(f->exp->fs->Rename(*f->node, *d->node, m.name));
  RewritePaths(from, HostFs::ChildPath(*d->node, m.name));
  return Reply(tag, Rrename{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Trenameat& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr od, GetNodeFid(m.olddirfid));
  FUN_ASSIGN_OR_RETURN(FidPtr nd, GetNodeFid(m.newdirfid));
  if (od->exp != nd->exp) return Err(EXDEV, "rename across exports");
  FUN_RETURN_IF_ERROR(od->exp->fs->RenameAt(*od->node, m.oldname, *nd->node, m.newname));
  RewritePaths(HostFs::ChildPath(*od->node, m.oldname), HostFs::ChildPath(*nd->node, m.newname));
  return Reply(tag, Rrenameat{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tlink& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr d, GetNodeFid(m.dfid));
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  if (f->exp != d->exp) return Err(EXDEV, "link across exports");
  FUN_RETURN_IF_ERROR(d->exp->fs->Link(*f->node, *d->node, m.name));
  return Reply(tag, Rlink{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tunlinkat& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr d, GetNodeFid(m.dirfd));
  FUN_RETURN_IF_ERROR(d->exp->fs->UnlinkAt(*d->node, m.name, (m.flags & kAtRemoveDir) != 0));
  return Reply(tag, Runlinkat{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tremove& m, std::string* out) {
  // The fid is clunked whether or not the remove succeeds.
  FidPtr f = TakeFid(m.fid);
  if (f == nullptr) return Err(EBADF, fmt::format("unknown fid {}", m.fid));
  if (f->kind != Fid::Kind::kNode) return Err(EBADF, "remove of an xattr fid");
  FUN_RETURN_IF_ERROR(f->exp->fs->Remove(*f->node));
  return Reply(tag, Rremove{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Treadlink& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  FUN_ASSIGN_OR_RETURN(std::string target, f->exp->fs->ReadLink(*f->node));
  return Reply(tag, Rreadlink{.target = std::move(target)}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tstatfs& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  FUN_ASSIGN_OR_RETURN(FsStat s, f->exp->fs->StatFs(*f->node));
  return Reply(tag,
               Rstatfs{.type = s.type,
                       .bsize = s.bsize,
                       .blocks = s.blocks,
                       .bfree = s.bfree,
                       .bavail = s.bavail,
                       .files = s.files,
                       .ffree = s.ffree,
                       .fsid = s.fsid,
                       .namelen = s.namelen},
               out);
}

template <>
Status Session::Handle(uint16_t tag, const Tread& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetFid(m.fid));
  uint32_t count = std::min<uint32_t>(m.count, msize() - static_cast<uint32_t>(kRreadHeaderSize));
  if (f->kind == Fid::Kind::kXattrRead) {
    std::lock_guard<std::mutex> lock(f->mu);
    const std::string& v = f->xattr_value;
    size_t off = m.offset >= v.size() ? v.size() : static_cast<size_t>(m.offset);
    size_t n = std::min<size_t>(count, v.size() - off);
    out->resize(kRreadHeaderSize + n);
    std::memcpy(out->data() + kRreadHeaderSize, v.data() + off, n);
    WriteRreadHeader(out->data(), tag, static_cast<uint32_t>(n));
    return OkStatus();
  }
  if (f->kind != Fid::Kind::kNode) return Err(EBADF, "read of an xattr-create fid");
  int fd = f->open_fd.load();
  if (fd < 0) return Err(EBADF, "read of a fid that is not open");
  if (m.offset > static_cast<uint64_t>(INT64_MAX)) return Err(EINVAL, "read offset");
  // Straight into the reply: header first, payload right after it, no copy. Growing only (a
  // reused buffer keeps its size from the last read), so steady-state reads clear nothing.
  if (out->size() < kRreadHeaderSize + count) out->resize(kRreadHeaderSize + count);
  ssize_t n;
  do {
    n = ::pread(fd, out->data() + kRreadHeaderSize, count, static_cast<off_t>(m.offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoError(errno, "read");
  out->resize(kRreadHeaderSize + static_cast<size_t>(n));
  WriteRreadHeader(out->data(), tag, static_cast<uint32_t>(n));
  return OkStatus();
}

template <>
Status Session::Handle(uint16_t tag, const Twrite& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetFid(m.fid));
  if (f->exp->fs->read_only()) return Err(EROFS, "read-only export");
  if (f->kind == Fid::Kind::kXattrWrite) {
    std::lock_guard<std::mutex> lock(f->mu);
    uint64_t end = m.offset + m.data.bytes.size();
    if (m.offset > f->xattr_size || end > f->xattr_size) {
      return Err(ERANGE, "xattr write beyond the announced size");
    }
    if (f->xattr_value.size() < end) f->xattr_value.resize(static_cast<size_t>(end));
    std::memcpy(f->xattr_value.data() + m.offset, m.data.bytes.data(), m.data.bytes.size());
    return Reply(tag, Rwrite{.count = static_cast<uint32_t>(m.data.bytes.size())}, out);
  }
  if (f->kind != Fid::Kind::kNode) return Err(EBADF, "write to an xattr fid");
  int fd = f->open_fd.load();
  if (fd < 0) return Err(EBADF, "write to a fid that is not open");
  if (m.offset > static_cast<uint64_t>(INT64_MAX)) return Err(EINVAL, "write offset");
  ssize_t n;
  do {
    n = ::pwrite(fd, m.data.bytes.data(), m.data.bytes.size(), static_cast<off_t>(m.offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoError(errno, "write");
  return Reply(tag, Rwrite{.count = static_cast<uint32_t>(n)}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Treaddir& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  int fd = f->open_fd.load();
  if (fd < 0) return Err(EBADF, "readdir of a fid that is not open");
  if (!f->node->is_dir()) return Err(ENOTDIR, "readdir of a non-directory");
  uint32_t max = std::min<uint32_t>(m.count, msize() - static_cast<uint32_t>(kRreadHeaderSize));
  std::lock_guard<std::mutex> lock(f->mu);
  if (f->dir == nullptr) {
    UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!dup) return ErrnoError(errno, "dup");
    f->dir = f->exp->fs->NewDirReader(std::move(dup));
  }
  // Rreaddir has Rread's layout: size[4] type[1] tag[2] count[4] data.
  out->resize(kRreadHeaderSize);  // DirentWriter appends after the header
  DirentWriter w(out, max);
  FUN_RETURN_IF_ERROR(f->exp->fs->ReadDir(*f->node, *f->dir, m.offset, w));
  uint32_t count = static_cast<uint32_t>(out->size() - kRreadHeaderSize);
  WriteRreadHeader(out->data(), tag, count);
  (*out)[4] = static_cast<char>(MsgType::kRreaddir);
  return OkStatus();
}

template <>
Status Session::Handle(uint16_t tag, const Tfsync& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  int fd = f->open_fd.load();
  if (fd < 0) return Err(EBADF, "fsync of a fid that is not open");
  if ((m.datasync ? ::fdatasync(fd) : ::fsync(fd)) != 0) return ErrnoError(errno, "fsync");
  return Reply(tag, Rfsync{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tlock& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  int fd = f->open_fd.load();
  if (fd < 0) return Err(EBADF, "lock on a fid that is not open");
  FUN_ASSIGN_OR_RETURN(uint8_t status,
                       HostFs::SetLock(fd, {.type = m.type, .start = m.start, .length = m.length}));
  return Reply(tag, Rlock{.status = status}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tgetlock& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  int fd = f->open_fd.load();
  if (fd < 0) return Err(EBADF, "getlock on a fid that is not open");
  FUN_ASSIGN_OR_RETURN(HostFs::LockRange held,
                       HostFs::GetLock(fd, {.type = m.type, .start = m.start, .length = m.length}));
  Rgetlock r{.type = held.type, .start = held.start, .length = held.length};
  if (held.type == kLockUnlock) {
    r.proc_id = m.proc_id;
    r.client_id = m.client_id;
  }
  return Reply(tag, std::move(r), out);
}

template <>
Status Session::Handle(uint16_t tag, const Txattrwalk& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  if (m.newfid != m.fid) {
    std::lock_guard<std::mutex> lock(mu_);
    if (fids_.count(m.newfid)) return Err(EINVAL, fmt::format("fid {} is in use", m.newfid));
  }
  std::string value;
  if (m.name.empty()) {
    FUN_ASSIGN_OR_RETURN(value, f->exp->fs->ListXattr(*f->node));
  } else {
    FUN_ASSIGN_OR_RETURN(value, f->exp->fs->GetXattr(*f->node, m.name));
  }
  uint64_t size = value.size();
  auto nf = std::make_shared<Fid>(f->exp, f->node, f->uid, Fid::Kind::kXattrRead);
  nf->xattr_value = std::move(value);
  if (m.newfid == m.fid) {
    ReplaceFid(m.fid, std::move(nf));
  } else {
    FUN_RETURN_IF_ERROR(InsertFid(m.newfid, std::move(nf)));
  }
  return Reply(tag, Rxattrwalk{.size = size}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Txattrcreate& m, std::string* out) {
  FUN_ASSIGN_OR_RETURN(FidPtr f, GetNodeFid(m.fid));
  if (f->exp->fs->read_only()) return Err(EROFS, "read-only export");
  if (m.attr_size > kMaxXattrSize) return Err(E2BIG, "xattr value over 64 KiB");
  if (!StartsWith(m.name, "user.")) return Err(EOPNOTSUPP, "only user.* xattrs are supported");
  if (m.flags & ~3u) return Err(EINVAL, "xattr flags");
  auto nf = std::make_shared<Fid>(f->exp, f->node, f->uid, Fid::Kind::kXattrWrite);
  nf->xattr_name = m.name;
  nf->xattr_size = m.attr_size;
  nf->xattr_flags = static_cast<int>(XattrFlagsToHost(m.flags));
  nf->xattr_value.reserve(static_cast<size_t>(m.attr_size));
  ReplaceFid(m.fid, std::move(nf));
  return Reply(tag, Rxattrcreate{}, out);
}

template <>
Status Session::Handle(uint16_t tag, const Tclunk& m, std::string* out) {
  FidPtr f = TakeFid(m.fid);
  if (f == nullptr) return Err(EBADF, fmt::format("unknown fid {}", m.fid));
  if (f->kind == Fid::Kind::kXattrWrite) {
    std::lock_guard<std::mutex> lock(f->mu);
    if (f->xattr_value.size() != f->xattr_size) {
      return Err(EINVAL, "xattr value shorter than announced");
    }
    if (f->xattr_size == 0) {
      FUN_RETURN_IF_ERROR(f->exp->fs->RemoveXattr(*f->node, f->xattr_name));
    } else {
      FUN_RETURN_IF_ERROR(
          f->exp->fs->SetXattr(*f->node, f->xattr_name, f->xattr_value, f->xattr_flags));
    }
  }
  return Reply(tag, Rclunk{}, out);
}

// After every specialization above, so std::visit instantiates those and not the fallback.
Status Session::Dispatch(const Frame& frame, std::string* out) {
  if (!versioned() && !std::holds_alternative<Tversion>(frame.msg)) {
    return Err(EPROTO, "Tversion must come first");
  }
  return std::visit([&](const auto& m) { return Handle(frame.tag, m, out); }, frame.msg);
}

}  // namespace fun::p9
