// test_client.h: a small 9P2000.L client for tests: drives a Session directly (no sockets) or
// a connected stream (socketpair) with the codec, with one helper per common request.
//
// An Rlerror comes back as an error Status whose sys_errno() is the Linux errno it carried, so
// tests read `EXPECT_EQ(c.Walk(1, 2, {"x"}).status().sys_errno(), ENOENT)`.
//
//   auto server = p9::Server::Create({.exports = {{"e", dir}}}).value();
//   p9::testing::SessionClient c(server->NewSession());
//   ASSERT_TRUE(c.Version().ok());
//   ASSERT_TRUE(c.Attach(1, "e").ok());
//   auto qids = c.Walk(1, 2, {"sub", "file"});
//
// Thread-safety: not thread-safe; one client per test thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/p9/codec.h"
#include "lib/p9/messages.h"
#include "lib/p9/server.h"

namespace fun::p9::testing {

// A decoded message that owns the bytes its Data fields point into.
struct Reply {
  std::unique_ptr<std::string> bytes;
  Frame frame;
  template <typename M>
  const M* As() const {
    return std::get_if<M>(&frame.msg);
  }
};
StatusOr<Reply> DecodeReply(std::string bytes);

class Client {
 public:
  virtual ~Client() = default;
  // Sends one request with a fresh tag and returns its reply (Rlerror included).
  virtual StatusOr<Reply> Call(const Message& m) = 0;

  // Each helper checks the reply type; Rlerror becomes ErrnoError(ecode).
  Status Version(uint32_t msize = 1 << 20);
  StatusOr<Qid> Attach(uint32_t fid, const std::string& aname, uint32_t uid = 0);
  StatusOr<std::vector<Qid>> Walk(uint32_t fid, uint32_t newfid,
                                  const std::vector<std::string>& names);
  StatusOr<Rlopen> Lopen(uint32_t fid, uint32_t flags);
  StatusOr<Rlcreate> Lcreate(uint32_t fid, const std::string& name, uint32_t flags, uint32_t mode,
                             uint32_t gid = 0);
  StatusOr<std::string> Read(uint32_t fid, uint64_t offset, uint32_t count);
  StatusOr<uint32_t> Write(uint32_t fid, uint64_t offset, std::string_view data);
  StatusOr<Rgetattr> Getattr(uint32_t fid);
  Status Setattr(const Tsetattr& m);
  StatusOr<std::vector<Dirent>> Readdir(uint32_t fid, uint64_t offset, uint32_t count);
  // Every entry, by repeated Treaddir from the offset of the last entry, as Linux does.
  StatusOr<std::vector<Dirent>> ReaddirAll(uint32_t fid, uint32_t count = 8192);
  StatusOr<Qid> Mkdir(uint32_t dfid, const std::string& name, uint32_t mode = 0755,
                      uint32_t gid = 0);
  StatusOr<Qid> Symlink(uint32_t fid, const std::string& name, const std::string& target,
                        uint32_t gid = 0);
  StatusOr<Qid> Mknod(uint32_t dfid, const std::string& name, uint32_t mode, uint32_t gid = 0);
  StatusOr<std::string> Readlink(uint32_t fid);
  Status Link(uint32_t dfid, uint32_t fid, const std::string& name);
  Status Rename(uint32_t fid, uint32_t dfid, const std::string& name);
  Status Renameat(uint32_t olddir, const std::string& oldname, uint32_t newdir,
                  const std::string& newname);
  Status Unlinkat(uint32_t dirfid, const std::string& name, uint32_t flags = 0);
  Status Remove(uint32_t fid);
  Status Clunk(uint32_t fid);
  Status Fsync(uint32_t fid);
  StatusOr<Rstatfs> Statfs(uint32_t fid);
  StatusOr<uint8_t> Lock(uint32_t fid, uint8_t type, uint64_t start, uint64_t length);
  StatusOr<Rgetlock> Getlock(uint32_t fid, uint8_t type, uint64_t start, uint64_t length);
  StatusOr<uint64_t> Xattrwalk(uint32_t fid, uint32_t newfid, const std::string& name);
  Status Xattrcreate(uint32_t fid, const std::string& name, uint64_t size, uint32_t flags);

  // Calls and expects reply type R (or Rlerror -> error).
  template <typename R>
  StatusOr<R> CallFor(const Message& m) {
    FUN_ASSIGN_OR_RETURN(Reply r, Call(m));
    if (const auto* e = r.As<Rlerror>()) {
      return ErrnoError(static_cast<int>(e->ecode), "Rlerror");
    }
    if (const auto* ok = r.As<R>()) return *ok;
    return InternalError("unexpected reply " + Describe(r.frame.msg));
  }

 protected:
  uint16_t NextTag() {
    uint16_t t = next_tag_++;
    if (next_tag_ == kNoTag) next_tag_ = 1;
    return t;
  }

 private:
  uint16_t next_tag_ = 1;
};

// Drives a Session in-process.
class SessionClient : public Client {
 public:
  explicit SessionClient(std::unique_ptr<Session> session) : session_(std::move(session)) {}
  StatusOr<Reply> Call(const Message& m) override;
  Session& session() { return *session_; }

 private:
  std::unique_ptr<Session> session_;
};

// Speaks over a connected stream.
class StreamClient : public Client {
 public:
  explicit StreamClient(int fd) : fd_(fd) {}
  StatusOr<Reply> Call(const Message& m) override;

  Status Send(uint16_t tag, const Message& m);
  Status SendRaw(std::string_view bytes);
  // The next message from the server; an error at EOF.
  StatusOr<Reply> Recv();
  int fd() const { return fd_.get(); }
  void Close() { fd_.reset(); }
  uint16_t tag() { return NextTag(); }

 private:
  UniqueFd fd_;
  std::string buf_;
};

}  // namespace fun::p9::testing
