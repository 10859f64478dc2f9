#include "lib/p9/testing/test_client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace fun::p9::testing {

StatusOr<Reply> DecodeReply(std::string bytes) {
  Reply r;
  r.bytes = std::make_unique<std::string>(std::move(bytes));
  FUN_ASSIGN_OR_RETURN(r.frame, Decode(*r.bytes));
  return r;
}

StatusOr<Reply> SessionClient::Call(const Message& m) {
  std::string wire;
  FUN_RETURN_IF_ERROR(Encode(NextTag(), m, &wire));
  // Decode the request as the server would, so Data fields point into a live buffer.
  FUN_ASSIGN_OR_RETURN(Frame f, Decode(wire));
  return DecodeReply(session_->HandleMessage(f));
}

Status StreamClient::Send(uint16_t tag, const Message& m) {
  std::string wire;
  FUN_RETURN_IF_ERROR(Encode(tag, m, &wire));
  return SendRaw(wire);
}

Status StreamClient::SendRaw(std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) {
      n = ::write(fd_.get(), bytes.data() + done, bytes.size() - done);  // a pty, a pipe
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "send");
    done += static_cast<size_t>(n);
  }
  return OkStatus();
}

StatusOr<Reply> StreamClient::Recv() {
  while (true) {
    FUN_ASSIGN_OR_RETURN(std::optional<uint32_t> size, NextMessageSize(buf_, 64 << 20));
    if (size && buf_.size() >= *size) {
      std::string msg = buf_.substr(0, *size);
      buf_.erase(0, *size);
      return DecodeReply(std::move(msg));
    }
    char tmp[65536];
    ssize_t n = ::read(fd_.get(), tmp, sizeof(tmp));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "read");
    if (n == 0) return UnavailableError("end of stream");
    buf_.append(tmp, static_cast<size_t>(n));
  }
}

StatusOr<Reply> StreamClient::Call(const Message& m) {
  uint16_t tag = NextTag();
  FUN_RETURN_IF_ERROR(Send(tag, m));
  FUN_ASSIGN_OR_RETURN(Reply r, Recv());
  if (r.frame.tag != tag) return InternalError("reply with an unexpected tag");
  return r;
}

Status Client::Version(uint32_t msize) {
  FUN_ASSIGN_OR_RETURN(Rversion r,
                       CallFor<Rversion>(Tversion{.msize = msize, .version = "9P2000.L"}));
  if (r.version != "9P2000.L") return InternalError("version " + r.version);
  return OkStatus();
}

StatusOr<Qid> Client::Attach(uint32_t fid, const std::string& aname, uint32_t uid) {
  FUN_ASSIGN_OR_RETURN(
      Rattach r, CallFor<Rattach>(Tattach{
                     .fid = fid, .afid = kNoFid, .uname = "", .aname = aname, .n_uname = uid}));
  return r.qid;
}

StatusOr<std::vector<Qid>> Client::Walk(uint32_t fid, uint32_t newfid,
                                        const std::vector<std::string>& names) {
  FUN_ASSIGN_OR_RETURN(Rwalk r,
                       CallFor<Rwalk>(Twalk{.fid = fid, .newfid = newfid, .wnames = names}));
  return r.wqids;
}

StatusOr<Rlopen> Client::Lopen(uint32_t fid, uint32_t flags) {
  return CallFor<Rlopen>(Tlopen{.fid = fid, .flags = flags});
}

StatusOr<Rlcreate> Client::Lcreate(uint32_t fid, const std::string& name, uint32_t flags,
                                   uint32_t mode, uint32_t gid) {
  return CallFor<Rlcreate>(
      Tlcreate{.fid = fid, .name = name, .flags = flags, .mode = mode, .gid = gid});
}

StatusOr<std::string> Client::Read(uint32_t fid, uint64_t offset, uint32_t count) {
  FUN_ASSIGN_OR_RETURN(Reply r, Call(Tread{.fid = fid, .offset = offset, .count = count}));
  if (const auto* e = r.As<Rlerror>()) return ErrnoError(static_cast<int>(e->ecode), "Rlerror");
  const auto* rr = r.As<Rread>();
  if (rr == nullptr) return InternalError("unexpected reply " + Describe(r.frame.msg));
  return std::string(rr->data.bytes);
}

StatusOr<uint32_t> Client::Write(uint32_t fid, uint64_t offset, std::string_view data) {
  FUN_ASSIGN_OR_RETURN(Rwrite r,
                       CallFor<Rwrite>(Twrite{.fid = fid, .offset = offset, .data = Data{data}}));
  return r.count;
}

StatusOr<Rgetattr> Client::Getattr(uint32_t fid) {
  return CallFor<Rgetattr>(Tgetattr{.fid = fid, .request_mask = kGetattrAll});
}

Status Client::Setattr(const Tsetattr& m) { return CallFor<Rsetattr>(m).status(); }

StatusOr<std::vector<Dirent>> Client::Readdir(uint32_t fid, uint64_t offset, uint32_t count) {
  FUN_ASSIGN_OR_RETURN(Reply r, Call(Treaddir{.fid = fid, .offset = offset, .count = count}));
  if (const auto* e = r.As<Rlerror>()) return ErrnoError(static_cast<int>(e->ecode), "Rlerror");
  const auto* rd = r.As<Rreaddir>();
  if (rd == nullptr) return InternalError("unexpected reply " + Describe(r.frame.msg));
  return ParseDirents(rd->data.bytes);
}

StatusOr<std::vector<Dirent>> Client::ReaddirAll(uint32_t fid, uint32_t count) {
  std::vector<Dirent> all;
  uint64_t offset = 0;
  while (true) {
    FUN_ASSIGN_OR_RETURN(std::vector<Dirent> batch, Readdir(fid, offset, count));
    if (batch.empty()) return all;
    offset = batch.back().offset;
    for (auto& d : batch) all.push_back(std::move(d));
  }
}

StatusOr<Qid> Client::Mkdir(uint32_t dfid, const std::string& name, uint32_t mode, uint32_t gid) {
  FUN_ASSIGN_OR_RETURN(
      Rmkdir r, CallFor<Rmkdir>(Tmkdir{.dfid = dfid, .name = name, .mode = mode, .gid = gid}));
  return r.qid;
}

StatusOr<Qid> Client::Symlink(uint32_t fid, const std::string& name, const std::string& target,
                              uint32_t gid) {
  FUN_ASSIGN_OR_RETURN(Rsymlink r, CallFor<Rsymlink>(Tsymlink{
                                       .fid = fid, .name = name, .symtgt = target, .gid = gid}));
  return r.qid;
}

StatusOr<Qid> Client::Mknod(uint32_t dfid, const std::string& name, uint32_t mode, uint32_t gid) {
  FUN_ASSIGN_OR_RETURN(
      Rmknod r, CallFor<Rmknod>(Tmknod{.dfid = dfid, .name = name, .mode = mode, .gid = gid}));
  return r.qid;
}

StatusOr<std::string> Client::Readlink(uint32_t fid) {
  FUN_ASSIGN_OR_RETURN(Rreadlink r, CallFor<Rreadlink>(Treadlink{.fid = fid}));
  return r.target;
}

Status Client::Link(uint32_t dfid, uint32_t fid, const std::string& name) {
  return CallFor<Rlink>(Tlink{.dfid = dfid, .fid = fid, .name = name}).status();
}

Status Client::Rename(uint32_t fid, uint32_t dfid, const std::string& name) {
  return CallFor<Rrename>(Trename{.fid = fid, .dfid = dfid, .name = name}).status();
}

Status Client::Renameat(uint32_t olddir, const std::string& oldname, uint32_t newdir,
                        const std::string& newname) {
  return CallFor<Rrenameat>(
             Trenameat{
                 .olddirfid = olddir, .oldname = oldname, .newdirfid = newdir, .newname = newname})
      .status();
}

Status Client::Unlinkat(uint32_t dirfid, const std::string& name, uint32_t flags) {
  return CallFor<Runlinkat>(Tunlinkat{.dirfd = dirfid, .name = name, .flags = flags}).status();
}

Status Client::Remove(uint32_t fid) { return CallFor<Rremove>(Tremove{.fid = fid}).status(); }

Status Client::Clunk(uint32_t fid) { return CallFor<Rclunk>(Tclunk{.fid = fid}).status(); }

Status Client::Fsync(uint32_t fid) {
  return CallFor<Rfsync>(Tfsync{.fid = fid, .datasync = 0}).status();
}

StatusOr<Rstatfs> Client::Statfs(uint32_t fid) { return CallFor<Rstatfs>(Tstatfs{.fid = fid}); }

StatusOr<uint8_t> Client::Lock(uint32_t fid, uint8_t type, uint64_t start, uint64_t length) {
  FUN_ASSIGN_OR_RETURN(Rlock r, CallFor<Rlock>(Tlock{.fid = fid,
                                                     .type = type,
                                                     .flags = 0,
                                                     .start = start,
                                                     .length = length,
                                                     .proc_id = 1,
                                                     .client_id = "test"}));
  return r.status;
}

StatusOr<Rgetlock> Client::Getlock(uint32_t fid, uint8_t type, uint64_t start, uint64_t length) {
  return CallFor<Rgetlock>(Tgetlock{.fid = fid,
                                    .type = type,
                                    .start = start,
                                    .length = length,
                                    .proc_id = 1,
                                    .client_id = "test"});
}

StatusOr<uint64_t> Client::Xattrwalk(uint32_t fid, uint32_t newfid, const std::string& name) {
  FUN_ASSIGN_OR_RETURN(Rxattrwalk r,
                       CallFor<Rxattrwalk>(Txattrwalk{.fid = fid, .newfid = newfid, .name = name}));
  return r.size;
}

Status Client::Xattrcreate(uint32_t fid, const std::string& name, uint64_t size, uint32_t flags) {
  return CallFor<Rxattrcreate>(
             Txattrcreate{.fid = fid, .name = name, .attr_size = size, .flags = flags})
      .status();
}

}  // namespace fun::p9::testing
